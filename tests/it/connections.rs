//! How atlas-import connects to PostgreSQL: without TLS to a server on this
//! machine unless the URL or `PGSSLMODE` names a mode (TLS protects nothing
//! on loopback, and sqlx's handshake costs about 90 ms a connection there),
//! with the named mode otherwise.

use atlas_import::db;

use crate::common::{Kind, TestDb};

/// Whether the transaction's connection to `url` is encrypted.
async fn encrypted(url: &str) -> bool {
    let database = db::connect(url).await.unwrap();
    let mut transaction = database.begin().await.unwrap();
    // `pg_stat_ssl` of the session itself: an error says "encrypted".
    let refused = transaction
        .execute(
            "DO $$ BEGIN IF (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) \
             THEN RAISE EXCEPTION 'encrypted'; END IF; END $$"
                .to_string(),
        )
        .await;
    transaction.rollback().await.unwrap();
    refused.is_err()
}

#[tokio::test]
async fn a_local_server_is_reached_without_tls_unless_the_url_names_a_mode() {
    let test = TestDb::new(Kind::Postgres).await;
    let options: sqlx::postgres::PgConnectOptions = test.url.parse().unwrap();
    let local = ["localhost", "127.0.0.1", "[::1]", "::1"].contains(&options.get_host());
    if !local || test.url.contains("sslmode") || std::env::var_os("PGSSLMODE").is_some() {
        eprintln!("skipped: the test server is not reached by a plain loopback URL");
        return;
    }
    assert!(
        !encrypted(&test.url).await,
        "the default URL connects without TLS"
    );
    let separator = if test.url.contains('?') { '&' } else { '?' };
    let prefer = format!("{}{separator}sslmode=prefer", test.url);
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&test.url)
        .await
        .unwrap();
    let server_tls: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        encrypted(&prefer).await,
        server_tls == "on",
        "sslmode=prefer, named in the URL, uses TLS where the server offers it"
    );
}
