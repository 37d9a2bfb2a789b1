"""Every statement of the PostgreSQL facts backend, with the schema filled in once."""

from __future__ import annotations

from flatstate.facts.backend import FIELDS, STORED, STORED_COUNT

__all__ = ["RANK_NORMALIZATION", "RANK_WEIGHTS", "Statements"]

# ts_rank's weights of D (category), C (text, value), B (key), A (entity): SQLite's bm25
# column weights (0.5, 1, 1.5, 2), halved to fit ts_rank's [0, 1].
RANK_WEIGHTS = "{0.25,0.5,0.75,1.0}"
# ts_rank divides by 1 + log(lexemes): a long fact matching once weighs less, as in bm25.
RANK_NORMALIZATION = 1
# A filter, never an index choice (the "+" of the SQLite side): with stale statistics,
# after a bulk load, the planner would AND the GIN index with (ns, seq), reading an entry
# for every fact of the namespace. Keyword queries are driven by the GIN index alone, which
# finds the namespace's facts itself: each fact's tsvector holds its namespace's lexeme
# (postgres_schema), which a search ANDs with its words. The filter stays, the final word
# (a fact whose text happened to spell that lexeme would otherwise pass).
_NS_FILTER = "f.ns || '' = %s"


class Statements:
    """Every statement, with the schema filled in once."""

    def __init__(self, s: str) -> None:
        self.s = s
        select = (
            f"SELECT {FIELDS} FROM {s}.facts AS f LEFT JOIN {s}.fact_access AS a ON a.seq = f.seq"
        )
        live = "f.superseded_at IS NULL AND (f.expires_at IS NULL OR f.expires_at > %s)"
        self._select, self._live = select, live
        self._config = f"'{s}.facts_search'::regconfig"
        self.duplicate = (
            f"SELECT seq FROM {s}.facts WHERE ns = %s AND normalized_hash = %s "
            "AND superseded_at IS NULL AND scope = %s AND scope_target IS NOT DISTINCT FROM %s "
            "ORDER BY text = %s DESC, seq LIMIT 1"
        )
        self.insert = (
            f"INSERT INTO {s}.facts (ns, {STORED}) "
            f"VALUES ({', '.join(['%s'] * (STORED_COUNT + 1))}) RETURNING seq"
        )
        self.decay_class = f"SELECT decay_class FROM {s}.facts WHERE seq = %s"
        self.confirm = (
            f"UPDATE {s}.facts SET last_confirmed_at = %s, decay_class = %s, expires_at = %s, "
            "confidence = greatest(confidence, %s), importance = greatest(importance, %s), "
            "why = coalesce(why, %s), entity = coalesce(entity, %s), key = coalesce(key, %s), "
            "value = coalesce(value, %s), source = coalesce(source, %s), "
            "session_key = coalesce(session_key, %s), entry_id = coalesce(entry_id, %s), "
            "tags = coalesce(tags, %s) WHERE seq = %s"
        )
        self.supersede = (
            f"UPDATE {s}.facts SET superseded_at = %s, superseded_by = %s "
            "WHERE ns = %s AND id = %s AND superseded_at IS NULL RETURNING seq"
        )
        self.superseded_by = f"SELECT superseded_by FROM {s}.facts WHERE ns = %s AND id = %s"
        self.exists = f"SELECT 1 FROM {s}.facts WHERE ns = %s AND id = %s"
        self.delete = f"DELETE FROM {s}.facts WHERE ns = %s AND id = %s"
        self.expire = (
            f"DELETE FROM {s}.facts WHERE ns = %s AND expires_at IS NOT NULL AND expires_at <= %s"
        )
        self.halve = (
            f"UPDATE {s}.facts SET confidence = confidence / 2, decayed_at = %s "
            "WHERE ns = %s AND decay_class = %s AND expires_at IS NOT NULL AND expires_at <= %s "
            "AND (decayed_at IS NULL OR decayed_at <= expires_at - %s)"
        )
        self.drop_faint = f"DELETE FROM {s}.facts WHERE ns = %s AND confidence < %s"
        # Counts for facts deleted meanwhile are dropped, not left behind as orphans. The
        # rows come as one JSON array of [seq, recalls, at]: msgspec encodes thousands in a
        # fraction of a millisecond, where psycopg took ~17 ms adapting three int arrays,
        # holding the GIL the store's recalls wait for.
        self.access = (
            f"INSERT INTO {s}.fact_access AS a (seq, recall_count, last_accessed_at) "
            "SELECT u.seq, u.n, u.at FROM (SELECT (r->>0)::bigint AS seq, (r->>1)::bigint AS n, "
            "(r->>2)::bigint AS at FROM json_array_elements(%s::json) AS r) AS u "
            f"WHERE EXISTS (SELECT 1 FROM {s}.facts f WHERE f.seq = u.seq) "
            "ON CONFLICT (seq) DO UPDATE SET "
            "recall_count = a.recall_count + excluded.recall_count, last_accessed_at = "
            "greatest(coalesce(a.last_accessed_at, 0), excluded.last_accessed_at)"
        )
        self.by_seq = f"{select} WHERE f.seq = %s"
        self.by_id = f"{select} WHERE f.ns = %s AND f.id = %s"
        self.by_prefix = f"{select} WHERE f.ns = %s AND f.id >= %s AND f.id < %s LIMIT 2"
        self.newest = f"{select} WHERE f.ns = %s AND {live} ORDER BY f.seq DESC LIMIT %s"
        self.lookup_entity = (
            f"{select} WHERE f.ns = %s AND f.entity IS NOT NULL AND lower(f.entity) = lower(%s) "
            f"AND {live} ORDER BY f.seq DESC LIMIT %s"
        )
        self.lookup_key = (
            f"{select} WHERE f.ns = %s AND f.entity IS NOT NULL AND lower(f.entity) = lower(%s) "
            f"AND lower(f.key) = lower(%s) AND {live} ORDER BY f.seq DESC LIMIT %s"
        )
        self.count_live = f"SELECT count(*) FROM {s}.facts AS f WHERE f.ns = %s AND {live}"
        self.by_seqs = f"{select} WHERE f.ns = %s AND f.seq = ANY(%s::bigint[])"
        self.page = f"{select} WHERE f.ns = %s AND f.seq > %s ORDER BY f.seq LIMIT %s"
        self.is_live = f"SELECT 1 FROM {s}.facts WHERE seq = %s AND superseded_at IS NULL"
        # A count only steers the planner: the namespace's lexeme suffices, without the
        # filter's read of every matching row's namespace (half the statement's time).
        self.count_matching = (
            f"SELECT count(*) FROM (SELECT 1 FROM {s}.facts AS f WHERE "
            f"f.search @@ ({self._tsquery(1)} && %s::tsquery) "
            "AND f.superseded_at IS NULL "
            "LIMIT %s) AS m"
        )
        self.top_seq = f"SELECT max(seq) FROM {s}.facts WHERE ns = %s"
        self.stats = (
            "SELECT count(*), count(superseded_at), "
            "count(CASE WHEN superseded_at IS NULL AND expires_at <= %s THEN 1 END) "
            f"FROM {s}.facts WHERE ns = %s"
        )
        self.by_class = (
            f"SELECT f.decay_class, count(*) FROM {s}.facts AS f WHERE f.ns = %s AND {live} "
            "GROUP BY f.decay_class ORDER BY f.decay_class"
        )
        self.count_vectors = f"SELECT count(*) FROM {s}.fact_vectors WHERE ns = %s"
        self.disk_bytes = (
            f"SELECT (SELECT coalesce(sum(pg_column_size(f.*)), 0) FROM {s}.facts f "
            "WHERE f.ns = %s) "
            f"+ (SELECT coalesce(sum(pg_column_size(a.*)), 0) FROM {s}.fact_access a "
            f"JOIN {s}.facts f ON f.seq = a.seq WHERE f.ns = %s) "
            f"+ (SELECT coalesce(sum(pg_column_size(v.*)), 0) FROM {s}.fact_vectors v "
            "WHERE v.ns = %s)"
        )
        self.vector_length = (
            f"SELECT cardinality(embedding) FROM {s}.fact_vectors WHERE ns = %s AND model = %s "
            "LIMIT 1"
        )
        self.vector_models = (
            f"SELECT model, max(cardinality(embedding)) FROM {s}.fact_vectors WHERE ns = %s "
            "GROUP BY model"
        )
        self.put_vector = (
            f"INSERT INTO {s}.fact_vectors (seq, ns, model, embedding) "
            "VALUES (%s, %s, %s, %s::real[]) ON CONFLICT (seq) DO UPDATE "
            "SET model = excluded.model, embedding = excluded.embedding"
        )
        self.put_vector_as_is = (
            f"INSERT INTO {s}.fact_vectors (seq, ns, model, embedding) "
            "VALUES (%s, %s, %s, %s::real[]) ON CONFLICT (seq) DO NOTHING"
        )
        self.vector_page = (
            f"SELECT v.seq, f.id, v.model, v.embedding FROM {s}.fact_vectors AS v "
            f"JOIN {s}.facts AS f ON f.seq = v.seq WHERE v.ns = %s AND v.seq > %s "
            "ORDER BY v.seq LIMIT %s"
        )
        self.nearest = (
            "SELECT v.seq, 1.0 - (v.embedding::vector <=> q.v) AS sim "
            f"FROM (SELECT %s::real[]::vector AS v) AS q, {s}.fact_vectors AS v "
            f"JOIN {s}.facts AS f ON f.seq = v.seq "
            "WHERE v.ns = %s AND v.model = %s AND f.superseded_at IS NULL "
            "AND (f.expires_at IS NULL OR f.expires_at > %s) ORDER BY sim DESC LIMIT %s"
        )
        self.missing_vectors = (
            f"SELECT f.seq, f.text FROM {s}.facts AS f "
            f"LEFT JOIN {s}.fact_vectors AS v ON v.seq = f.seq AND v.model = %s "
            "WHERE f.ns = %s AND f.superseded_at IS NULL AND v.seq IS NULL LIMIT %s"
        )
        self._keyword: dict[tuple[int, bool], str] = {}
        self._floor: dict[int, str] = {}

    def _tsquery(self, terms: int) -> str:
        """The OR of ``terms`` words, each folded and parsed as plain text (never syntax)."""
        one = f"plainto_tsquery({self._config}, {self.s}.facts_fold(%s))"
        return "(" + " || ".join([one] * terms) + ")"

    def keyword(self, terms: int, floored: bool) -> str:
        """The best ``pool`` matches of ``terms`` words, best first; ``floored``: only
        those from a seq on (then the parameters end with it, before now and the pool)."""
        found = self._keyword.get((terms, floored))
        if found is None:
            # Superseded facts are not in the index; expired ones wait for decay() and
            # are filtered here. The floor is a plain range on seq, so the planner ANDs
            # the primary key's range with the GIN index's matches and reads only the
            # newest rows from the heap (a common word matches a tenth of the facts).
            # The candidates are ranked and cut to the pool first, on the facts alone;
            # only those then get their counters joined.
            since = "AND f.seq >= %s " if floored else ""
            found = self._keyword[(terms, floored)] = (
                f"SELECT m.b, {FIELDS} FROM (SELECT f.seq, "
                f"-ts_rank('{RANK_WEIGHTS}', f.search, q.q, {RANK_NORMALIZATION}) AS b "
                f"FROM (SELECT {self._tsquery(terms)} AS q, %s::tsquery AS n) AS q, "
                f"{self.s}.facts AS f "
                f"WHERE f.search @@ (q.q && q.n) AND {_NS_FILTER} AND f.superseded_at IS NULL "
                f"{since}AND (f.expires_at IS NULL OR f.expires_at > %s) "
                "ORDER BY b, f.seq DESC LIMIT %s) AS m "
                f"JOIN {self.s}.facts AS f ON f.seq = m.seq "
                f"LEFT JOIN {self.s}.fact_access AS a ON a.seq = f.seq "
                "ORDER BY m.b, m.seq DESC"
            )
        return found

    def floor(self, terms: int) -> str:
        found = self._floor.get(terms)
        if found is None:
            found = self._floor[terms] = (
                f"SELECT f.seq FROM {self.s}.facts AS f "
                f"WHERE f.search @@ ({self._tsquery(terms)} && %s::tsquery) "
                f"AND {_NS_FILTER} AND f.superseded_at IS NULL "
                "ORDER BY f.seq DESC LIMIT 1 OFFSET %s"
            )
        return found
