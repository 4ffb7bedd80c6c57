//! A null HTTP server on tokio-uring, the runtime Shorty's uring backend
//! runs on: a task per connection, an owned-buffer read, a write.
//! `--ring plain` is tokio-uring as shipped; `--ring coop` (the default)
//! adds `COOP_TASKRUN` + `SINGLE_ISSUER` through `uring_builder`, as
//! shorty-uring does.

use std::io;

use shorty_bench_floor::{replies, Args, Heads};
use tokio_uring::net::{TcpListener, TcpStream};

async fn serve(stream: TcpStream) -> io::Result<()> {
    let mut heads = Heads::default();
    let mut buf = vec![0; 4096];
    let mut out = Vec::new();
    loop {
        let (n, b) = stream.read(buf).await;
        buf = b;
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        let Some(input) = buf.get(..n) else {
            return Ok(());
        };
        let Ok(fed) = heads.feed(input) else {
            return Ok(());
        };
        out.clear();
        replies(fed, &mut out);
        let (sent, o) = stream.write_all(out).await;
        out = o;
        sent?;
        if fed.close {
            return Ok(());
        }
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut flags = tokio_uring::uring_builder();
    match args.ring.as_deref() {
        None | Some("coop") => {
            flags.setup_coop_taskrun().setup_single_issuer();
        }
        Some("plain") => {}
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--ring: coop or plain",
            ));
        }
    }
    let listener = args.bind()?;
    let runtime =
        tokio_uring::Runtime::new(tokio_uring::builder().entries(1024).uring_builder(&flags))?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener);
        loop {
            let (stream, _) = listener.accept().await?;
            tokio_uring::spawn(async move {
                let _ = serve(stream).await;
            });
        }
    })
}
