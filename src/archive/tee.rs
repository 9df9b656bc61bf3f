//! One read of a stream for two consumers on two cores: the verifier and
//! the unpacker of a ware, or the hasher and the unpacker of a rootfs
//! tar, each get every byte while the file is read once.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Chunks in flight per consumer: enough to keep both busy, little memory.
const DEPTH: usize = 8;
const CHUNK: usize = 1 << 20;

type Chunk = Result<Arc<[u8]>, io::ErrorKind>;

/// The reading end a consumer reads the stream from.
pub struct Pipe {
    rx: Receiver<Chunk>,
    chunk: Arc<[u8]>,
    at: usize,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => (self.chunk, self.at) = (chunk, 0),
                Ok(Err(kind)) => return Err(io::Error::new(kind, "reading the source failed")),
                // The sender is done: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The other consumer, running on its own thread.
pub struct Side<T> {
    reader: JoinHandle<()>,
    side: JoinHandle<T>,
}

impl<T> Side<T> {
    /// Waits for the read and the side consumer to finish; `None` if the
    /// side consumer panicked.
    pub fn join(self) -> Option<T> {
        let _ = self.reader.join();
        self.side.join().ok()
    }
}

/// Reads `src` on a thread of its own and hands every byte to `side` (on
/// another thread) and to the returned pipe. A consumer that stops early
/// only stops getting bytes; the other still gets all of them.
pub fn split<T: Send + 'static>(
    mut src: impl Read + Send + 'static,
    side: impl FnOnce(Pipe) -> T + Send + 'static,
) -> (Pipe, Side<T>) {
    let (main_tx, main_rx) = sync_channel::<Chunk>(DEPTH);
    let (side_tx, side_rx) = sync_channel::<Chunk>(DEPTH);
    let reader = std::thread::spawn(move || {
        let mut txs: Vec<SyncSender<Chunk>> = vec![main_tx, side_tx];
        loop {
            let mut buf = vec![0u8; CHUNK];
            let chunk = match src.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Arc::<[u8]>::from(buf))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e.kind()),
            };
            let failed = chunk.is_err();
            txs.retain(|tx| tx.send(chunk.clone()).is_ok());
            if failed || txs.is_empty() {
                return;
            }
        }
    });
    let side_pipe = Pipe { rx: side_rx, chunk: Arc::from(Vec::new()), at: 0 };
    let side = std::thread::spawn(move || side(side_pipe));
    (Pipe { rx: main_rx, chunk: Arc::from(Vec::new()), at: 0 }, Side { reader, side })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_consumers_get_every_byte_even_when_one_stops_early() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let (mut main, side) = split(io::Cursor::new(data.clone()), |mut p| {
            let mut all = Vec::new();
            p.read_to_end(&mut all).unwrap();
            all
        });
        let mut head = vec![0u8; 10];
        main.read_exact(&mut head).unwrap();
        drop(main);
        assert_eq!(head, data[..10]);
        assert_eq!(side.join().unwrap(), data);
    }
}
