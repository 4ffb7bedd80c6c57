//! A null HTTP server on tokio's current-thread runtime (epoll): a task per
//! connection, a read, the replies, a write.

use std::io;

use shorty_bench_floor::{replies, Args, Heads};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(mut stream: TcpStream) -> io::Result<()> {
    let mut heads = Heads::default();
    let mut buf = vec![0; 4096];
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut buf).await?;
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
        stream.write_all(&out).await?;
        if fed.close {
            return Ok(());
        }
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = args.bind()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                // A peer's error ends its connection only.
                let _ = serve(stream).await;
            });
        }
    })
}
