/* Consumes the installed libctx-sqlite: a statement bounded by a context. */
#include <ctx/sqlite.h>

int main(void)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT 6 * 7", -1, &st, NULL) != SQLITE_OK)
        return 1;
    ctx_t *ctx = ctx_with_timeout(ctx_background(), CTX_SECOND);
    int ok = ctx_sqlite_step(ctx, st) == SQLITE_ROW &&
             sqlite3_column_int(st, 0) == 42 &&
             ctx_sqlite_step(NULL, st) == SQLITE_MISUSE;
    sqlite3_finalize(st);
    sqlite3_close(db);
    ctx_release(ctx);
    return ok ? 0 : 1;
}
