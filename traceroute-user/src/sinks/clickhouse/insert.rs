//! One `INSERT … FORMAT JSONEachRow` over ClickHouse's HTTP interface
//! (hyper's HTTP/1 client, already in the tree for the CLI's agent client).
//! Plain HTTP: for TLS, put the store's HTTPS port behind a local proxy, or
//! ship the JSON lines with a log shipper (docs/FLEET.md).

use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{StatusCode, header};
use hyper_util::rt::TokioIo;

use super::{Options, Secret};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one insert may take, answer included.
const INSERT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an error answer is kept for the log line.
const ERROR_BODY_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("cannot reach the store at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The store answered and refused the rows.
    #[error("the store refused the insert ({status}): {message}")]
    Refused { status: u16, message: String },
}

impl InsertError {
    /// Refusals a retry will not cure until someone acts: credentials, or
    /// the schema (missing database, table or column). The rows stay
    /// spooled either way; these get an error line that says so.
    pub fn needs_a_person(&self) -> bool {
        match self {
            InsertError::Refused { status, message } => {
                matches!(*status, 401 | 403 | 404)
                    || ["Code: 60,", "Code: 81,", "Code: 16,", "Code: 192,", "Code: 193,", "Code: 516,"]
                        .iter()
                        .any(|code| message.contains(code))
            }
            _ => false,
        }
    }
}

/// Inserts `rows` (JSON lines) into `table` of the configured database.
pub async fn insert(options: &Options, table: &str, rows: Vec<u8>) -> Result<(), InsertError> {
    let address = options.address();
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(address.as_str()),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(InsertError::Unreachable {
                address,
                message: e.to_string(),
            });
        }
        Err(_) => return Err(InsertError::Timeout(CONNECT_TIMEOUT)),
    };
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let query = format!(
            "INSERT INTO {}.{table} FORMAT JSONEachRow",
            options.database
        );
        let target = format!(
            "/?query={}",
            percent_encoding::utf8_percent_encode(&query, percent_encoding::NON_ALPHANUMERIC)
        );
        let request = hyper::Request::post(target)
            .header(header::HOST, address.as_str())
            .header(header::AUTHORIZATION, basic(&options.user, &options.password))
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Full::new(Bytes::from(rows)))
            .expect("a request built from valid parts");
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        connection.abort();
        if status == StatusCode::OK {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]);
        Err(InsertError::Refused {
            status: status.as_u16(),
            message: crate::error::one_line(text.trim()),
        })
    };
    tokio::time::timeout(INSERT_TIMEOUT, exchange)
        .await
        .map_err(|_| InsertError::Timeout(INSERT_TIMEOUT))?
}

/// The Basic authorization header (every ClickHouse release takes it).
fn basic(user: &str, password: &Secret) -> String {
    let pair = format!("{user}:{}", password.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_and_credential_refusals_are_told_apart_from_outages() {
        let refused = |status, message: &str| InsertError::Refused {
            status,
            message: message.into(),
        };
        assert!(refused(401, "Code: 193, e.displayText() = DB::Exception: Wrong password").needs_a_person());
        assert!(refused(404, "Code: 60, e.displayText() = DB::Exception: Table t.x doesn't exist.").needs_a_person());
        assert!(refused(500, "Code: 16, e.displayText() = DB::Exception: No such column nope").needs_a_person());
        assert!(!refused(503, "Code: 202, Too many simultaneous queries").needs_a_person());
        assert!(!InsertError::Timeout(INSERT_TIMEOUT).needs_a_person());
        assert_eq!(
            basic("agent", &Secret::new("s3cret")),
            "Basic YWdlbnQ6czNjcmV0"
        );
    }
}
