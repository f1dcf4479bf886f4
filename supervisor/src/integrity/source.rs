//! Positioned, bounded reads from an open file or an in-memory image.
//!
//! ELF inspection works through this trait so the same code runs on the supervisor's open
//! descriptor and on fuzzer bytes, and so it reads only the regions it needs instead of
//! loading a whole (possibly huge) binary.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub trait ReadAt {
    /// Current size in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Fills `buf` from `offset`, failing with [`io::ErrorKind::UnexpectedEof`] if the
    /// source ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .and_then(|range| self.get(range))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Reads `len` bytes at `offset` into a fresh buffer; callers bound `len` first.
pub fn read_vec<S: ReadAt + ?Sized>(source: &S, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    source.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}
