//! Sequential scanning of one segment file: the records that verify, the regions that do not,
//! and where the intact part of the file ends. Recovery and compaction both read segments this
//! way.
//!
//! The scan trusts nothing it has not checked. At each 4 KiB boundary it tries to decode a
//! record header; if the header verifies (magic, header CRC, fields, and it names this
//! segment and this offset) and the whole record's CRC matches, the record is intact. A
//! header that verifies over a record that does not is skipped by the header's length; any
//! other block is skipped alone, so the scan resynchronises on the next intact header. Bad
//! bytes followed by an intact record form a *corrupt region*; bad bytes after the last intact
//! record are the *tail* (a torn write if this is the newest segment).

use std::io;
use std::ops::ControlFlow;

use nabu_core::{AlignedBuf, align_up};

use crate::disk::DiskFile;
use crate::segment::{self, BLOCK_BYTES, FILE_HEADER_BYTES, RecordHeader, VerifiedRecord};

/// How much of a segment one read brings in while scanning.
const SCAN_WINDOW_BYTES: usize = 4 << 20;

/// One intact record met by a scan.
#[derive(Debug)]
pub(crate) struct ScannedRecord<'a> {
    pub offset: u64,
    pub verified: VerifiedRecord,
    /// The whole record, padding included.
    pub bytes: &'a [u8],
}

impl ScannedRecord<'_> {
    pub fn key(&self) -> &[u8] {
        &self.bytes[segment::RECORD_HEADER_BYTES..][..usize::from(self.verified.header.key_len)]
    }
}

/// What a scan found besides the intact records.
#[derive(Debug, Default)]
pub(crate) struct ScanSummary {
    /// The end of the last intact record (the file header's end if none).
    pub intact_end: u64,
    /// The file's length when scanned.
    pub file_len: u64,
    /// Bad regions followed by an intact record, as (offset, length).
    pub corrupt_regions: Vec<(u64, u64)>,
}

impl ScanSummary {
    /// Bytes after the last intact record.
    pub fn tail_bytes(&self) -> u64 {
        self.file_len - self.intact_end
    }
}

/// Reads a file through an aligned window, so that scanning does few large reads.
struct WindowReader<'a> {
    file: &'a dyn DiskFile,
    window: AlignedBuf,
    start: u64,
    filled: usize,
}

impl<'a> WindowReader<'a> {
    fn new(file: &'a dyn DiskFile) -> Self {
        Self {
            file,
            window: AlignedBuf::zeroed(SCAN_WINDOW_BYTES),
            start: 0,
            filled: 0,
        }
    }

    /// `len` bytes at `offset` (both block-aligned), or fewer at end of file.
    fn bytes(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let in_window =
            offset >= self.start && offset + len as u64 <= self.start + self.filled as u64;
        if !in_window {
            let wanted = align_up(len.max(SCAN_WINDOW_BYTES));
            if self.window.capacity() < wanted {
                self.window = AlignedBuf::zeroed(wanted);
            }
            self.start = offset;
            self.filled = self
                .file
                .read_at(&mut self.window.as_full_mut()[..wanted], offset)?;
        }
        let from = (offset - self.start) as usize;
        let to = (from + len).min(self.filled);
        Ok(&self.window.as_full()[from..to])
    }
}

/// Scans segment `segment_id` (open as `file`, `file_len` bytes long) from its first record,
/// calling `visit` for each intact record in order until it returns `Break`.
pub(crate) fn scan_segment(
    file: &dyn DiskFile,
    segment_id: u64,
    file_len: u64,
    visit: &mut dyn FnMut(ScannedRecord<'_>) -> ControlFlow<()>,
) -> io::Result<ScanSummary> {
    let block = BLOCK_BYTES as u64;
    let mut reader = WindowReader::new(file);
    let mut summary = ScanSummary {
        intact_end: FILE_HEADER_BYTES,
        file_len,
        ..Default::default()
    };
    let mut bad_since: Option<u64> = None;
    let mut offset = FILE_HEADER_BYTES;
    while offset + block <= file_len {
        let head = reader.bytes(offset, BLOCK_BYTES)?;
        let record_len = match RecordHeader::decode(head) {
            Ok(header) if header.record_bytes() as u64 <= file_len - offset => {
                header.record_bytes()
            }
            _ => {
                bad_since.get_or_insert(offset);
                offset += block;
                continue;
            }
        };
        let bytes = reader.bytes(offset, record_len)?;
        let Ok(verified) = segment::verify_record(bytes, segment_id, offset) else {
            bad_since.get_or_insert(offset);
            offset += record_len as u64;
            continue;
        };
        if let Some(bad) = bad_since.take() {
            summary.corrupt_regions.push((bad, offset - bad));
        }
        let flow = visit(ScannedRecord {
            offset,
            verified,
            bytes,
        });
        offset += record_len as u64;
        summary.intact_end = offset;
        if flow.is_break() {
            break;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::disk::{DirectIo, Disk, OpenOptions};
    use crate::fault::FaultDisk;
    use crate::segment::{EncodedRecord, RecordKind};

    /// Writes a segment with records of the given payload lengths; returns the file and the
    /// offset of each record.
    fn segment_with(lengths: &[usize]) -> (Box<dyn DiskFile>, Vec<u64>) {
        let disk = FaultDisk::new();
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let options = OpenOptions {
            create: true,
            direct_io: DirectIo::Auto,
        };
        let file = disk.open(Path::new("/d/s"), options).expect("open");
        file.write_at(segment::encode_file_header(3).as_full(), 0)
            .expect("header");
        let mut offset = FILE_HEADER_BYTES;
        let mut offsets = Vec::new();
        for (index, &len) in lengths.iter().enumerate() {
            let mut record = EncodedRecord::new(RecordKind::Put, b"k", &vec![index as u8; len]);
            record.seal(index as u64 + 1, 3, offset);
            file.write_at(record.bytes(), offset).expect("write");
            offsets.push(offset);
            offset += record.len() as u64;
        }
        (file, offsets)
    }

    fn scan(file: &dyn DiskFile) -> (Vec<u64>, ScanSummary) {
        let mut seen = Vec::new();
        let len = file.len().expect("len");
        let summary = scan_segment(file, 3, len, &mut |record| {
            seen.push(record.offset);
            ControlFlow::Continue(())
        })
        .expect("scan");
        (seen, summary)
    }

    #[test]
    fn corrupt_middle_is_a_region_and_torn_end_is_the_tail() {
        let (file, offsets) = segment_with(&[10, 9000, 10, 20000]);
        // Rot the second record's payload and zero the first block of the last record.
        let mut byte = AlignedBuf::zeroed(BLOCK_BYTES);
        file.read_exact_at(byte.as_full_mut(), offsets[1] + 4096)
            .expect("read");
        byte[0] ^= 1;
        file.write_at(byte.as_full(), offsets[1] + 4096)
            .expect("write");
        file.write_at(AlignedBuf::zeroed(BLOCK_BYTES).as_full(), offsets[3])
            .expect("write");

        let (seen, summary) = scan(&*file);
        assert_eq!(seen, vec![offsets[0], offsets[2]]);
        assert_eq!(
            summary.corrupt_regions,
            vec![(offsets[1], offsets[2] - offsets[1])]
        );
        assert_eq!(summary.intact_end, offsets[3]);
        assert_eq!(summary.tail_bytes(), file.len().expect("len") - offsets[3]);
    }

    #[test]
    fn a_rotten_header_resynchronises_on_the_next_record() {
        let (file, offsets) = segment_with(&[10, 9000, 10]);
        let mut head = AlignedBuf::zeroed(BLOCK_BYTES);
        file.read_exact_at(head.as_full_mut(), offsets[1])
            .expect("read");
        head[8] ^= 0x80; // payload length: header CRC fails
        file.write_at(head.as_full(), offsets[1]).expect("write");
        let (seen, summary) = scan(&*file);
        assert_eq!(seen, vec![offsets[0], offsets[2]]);
        assert_eq!(summary.corrupt_regions.len(), 1);
        assert_eq!(summary.tail_bytes(), 0);
    }
}
