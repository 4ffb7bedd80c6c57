//! Turning replies into results.

use bytes::Bytes;
use shorty_protocol::Reply;

use crate::error::{Error, Result};

/// `want` picks the expected reply kind; an error reply becomes
/// [`Error::Server`], any other kind [`Error::UnexpectedReply`].
pub(crate) fn expect<T>(reply: Reply, want: impl FnOnce(Reply) -> Result<T, Reply>) -> Result<T> {
    if let Some((code, message)) = reply.as_error() {
        return Err(Error::Server {
            code,
            message: message.to_owned(),
        });
    }
    want(reply).map_err(|other| Error::UnexpectedReply(format!("{other:?}")))
}

/// As [`expect`], for replies whose body is a URL.
pub(crate) fn expect_url(
    reply: Reply,
    want: impl FnOnce(Reply) -> Result<Bytes, Reply>,
) -> Result<String> {
    let body = expect(reply, want)?;
    String::from_utf8(body.to_vec())
        .map_err(|_| Error::UnexpectedReply("a URL that is not UTF-8".into()))
}
