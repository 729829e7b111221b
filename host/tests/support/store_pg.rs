//! A throw-away PostgreSQL database per test, for the store conformance suite.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/test` unless `SWITCHYARD_TEST_POSTGRES_URL` names another
//! database to connect to for `CREATE DATABASE`. When no server answers the tests skip, except under `CI=true`
//! where a missing database is a broken pipeline, not a reason to pass.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

const DEFAULT_BASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PostgresTestDatabase {
    base_url: String,
    name: String,
    pub url: String,
}

impl PostgresTestDatabase {
    /// Creates an empty database, or returns None (after saying so) when PostgreSQL is unreachable outside CI.
    pub async fn create(test_name: &str) -> Option<PostgresTestDatabase> {
        let base_url = std::env::var("SWITCHYARD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.to_string());
        let mut admin = match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&base_url)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return unreachable(test_name, &base_url, &error.to_string()),
            Err(_) => return unreachable(test_name, &base_url, "timed out"),
        };
        let name = format!("switchyard_conf_{}", hex::encode(rand::random::<[u8; 8]>()));
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("CREATE DATABASE");
        admin.close().await.ok();
        let mut url = url::Url::parse(&base_url).expect("SWITCHYARD_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Some(PostgresTestDatabase { base_url, name, url: url.to_string() })
    }

    /// Drops the database, best effort: a leftover only costs disk space on a test server.
    pub async fn drop_database(self) {
        let Ok(mut admin) = PgConnection::connect(&self.base_url).await else { return };
        // FORCE ends connections a pool may still hold.
        if let Err(error) = admin.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str()).await
        {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
        admin.close().await.ok();
    }
}

fn unreachable(test_name: &str, base_url: &str, reason: &str) -> Option<PostgresTestDatabase> {
    let base_url = without_password(base_url);
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test_name}: PostgreSQL at {base_url} is unreachable ({reason}) and CI=true requires it");
    }
    eprintln!("SKIP {test_name}: PostgreSQL at {base_url} is unreachable ({reason}); set SWITCHYARD_TEST_POSTGRES_URL");
    None
}

fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            parsed.set_password(Some("***")).ok();
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
