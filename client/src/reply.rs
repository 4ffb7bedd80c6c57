//! Turning replies into results.

use bytes::Bytes;
use shorty_protocol::link::{LinkInfo, LinkStats};
use shorty_protocol::Reply;

use crate::error::{Error, Result};
use crate::link::{Link, Stats};

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

/// The link a version-2 reply describes, when it is the reply `want`
/// picks (its TLV list was checked when the reply was decoded).
pub(crate) fn expect_link(
    reply: Reply,
    want: impl FnOnce(Reply) -> Result<Bytes, Reply>,
) -> Result<Link> {
    let body = expect(reply, want)?;
    Ok(LinkInfo::parse(&body)?.into())
}

/// The statistics of a STATS reply.
pub(crate) fn expect_stats(reply: Reply) -> Result<Stats> {
    let body = expect(reply, |r| match r {
        Reply::Stats(body) => Ok(body),
        other => Err(other),
    })?;
    Ok(LinkStats::parse(&body)?.into())
}

/// An empty version-2 reply (DELETED, AUTHED) of the kind `want` accepts.
pub(crate) fn expect_empty(reply: Reply, want: impl FnOnce(&Reply) -> bool) -> Result<()> {
    expect(reply, |r| if want(&r) { Ok(()) } else { Err(r) })
}
