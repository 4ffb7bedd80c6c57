//! Arbitrary bytes as a log segment (and as its hint file), through the
//! recovery code a restart runs. Asserts, not only "no panic":
//! - a refusal names an offset inside the file;
//! - a cut keeps a prefix of the file, and only what the scan reported as
//!   links is ever reported;
//! - recovery leaves the segment either removed or sealed, so a second
//!   recovery of its output changes nothing and finds the same links;
//! - `verify` agrees with recovery on whether the segment is refused.
//!
//! Structure-aware inputs (`Input::Built`) start from a valid sealed
//! segment with its valid hint, as a clean stop leaves them, and then
//! damage either: a cut (anywhere, record boundaries included), flips, a
//! hint truncated, lost, or mutated and then re-checksummed (so hints that
//! pass their checksum reach the checks behind it). Then also:
//! - untouched, the segment loads from its hint with exactly its links;
//! - a segment cut shorter than an intact hint's seal is refused as
//!   missing vouched bytes, never recovered shorter;
//! - whatever is loaded from a hint points inside the sealed bytes.
#![no_main]

use std::collections::HashMap;
use std::io;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shorty_service::log::hint::hint_file_name;
use shorty_service::log::recovery::{
    recover_segment, verify_segment, RecoveryError, RecoveryFiles, Verdict,
};
use shorty_service::log::scan::{scan_segment, ScanError};
use shorty_service::log::segments::segment_file_name;

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(RawInput),
    Built(Built),
}

/// A valid sealed segment and its hint, then damaged.
#[derive(Debug, Arbitrary)]
struct Built {
    /// Batches of links: (key, URL length).
    batches: Vec<Vec<(u64, u8)>>,
    /// Cut the segment to this length (mod its length).
    cut: Option<u16>,
    /// Flips in the segment: (position mod length, mask).
    flips: Vec<(u16, u8)>,
    hint: HintDamage,
}

#[derive(Debug, Arbitrary)]
enum HintDamage {
    None,
    Lost,
    Truncated(u16),
    Flipped(u16, u8),
    /// Bytes overwritten, then the checksum fixed: a hint that passes its
    /// checksum but may lie.
    Rewritten(u16, Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct RawInput {
    segment: Vec<u8>,
    hint: Option<Vec<u8>>,
    /// Start from a well-formed segment and damage it, so the fuzzer
    /// reaches the interesting cases quickly.
    seed_links: u8,
    flips: Vec<(u16, u8)>,
    cut: Option<u16>,
}

#[derive(Default)]
struct Mem(HashMap<String, Vec<u8>>);

impl RecoveryFiles for Mem {
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn read_tail(&mut self, name: &str, n: usize) -> io::Result<(u64, Vec<u8>)> {
        let f = self.0.get(name).ok_or(io::ErrorKind::NotFound)?;
        Ok((f.len() as u64, f[f.len().saturating_sub(n)..].to_vec()))
    }
    fn read_if_exists(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.get(name).cloned())
    }
    fn truncate_and_append(&mut self, name: &str, len: u64, tail: &[u8]) -> io::Result<()> {
        let f = self.0.get_mut(name).ok_or(io::ErrorKind::NotFound)?;
        assert!(len as usize <= f.len(), "a cut never extends the file");
        f.truncate(len as usize);
        f.extend_from_slice(tail);
        Ok(())
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.0.remove(name);
        Ok(())
    }
    fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.0.insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }
}

/// A segment of format 3's records: plain links, links with options (an
/// update of an earlier key: a higher version), tombstones (of a code and
/// of an alias).
fn well_formed(links: u8) -> Vec<u8> {
    use shorty_service::log::record::{
        encode_link, encode_marker, encode_preamble, encode_tombstone, Link, Tombstone, ALIAS_KEY,
    };
    use shorty_service::log::tlv;
    let mut out = Vec::new();
    encode_preamble(7, &mut out);
    for i in 0..u64::from(links) {
        if i % 3 == 2 {
            encode_marker(out.len() as u64, &mut out);
        }
        let url = format!("https://e.com/{i}");
        let mut options = Vec::new();
        match i % 7 {
            4 => {
                tlv::put(&mut options, tlv::VERSION, &i.to_le_bytes());
                tlv::put(&mut options, tlv::EXPIRES_AT, &(i * 1000).to_le_bytes());
            }
            5 => {
                encode_tombstone(
                    &Tombstone {
                        key: i / 2,
                        version: i,
                        deleted_at_ms: i,
                        alias: None,
                    },
                    &mut out,
                );
                continue;
            }
            6 => {
                tlv::put(&mut options, tlv::ALIAS, format!("alias-{i}").as_bytes());
            }
            _ => {}
        }
        encode_link(
            &Link {
                key: if i % 7 == 6 { ALIAS_KEY } else { i },
                id: i,
                url: url.as_bytes(),
                options: &options,
            },
            &mut out,
        );
    }
    out
}

fuzz_target!(|input: Input| match input {
    Input::Raw(raw) => raw_input(raw),
    Input::Built(built) => built_input(built),
});

fn built_input(input: Built) {
    use shorty_service::log::hint::build_hint;
    use shorty_service::log::record::{Link, PREAMBLE_LEN, SEAL_LEN};
    use shorty_service::log::segments::encode_sealed_segment;

    // Distinct keys, bounded sizes.
    let mut seen = std::collections::HashSet::new();
    let urls: Vec<Vec<(u64, String)>> = input
        .batches
        .iter()
        .take(8)
        .map(|batch| {
            batch
                .iter()
                .take(16)
                .filter(|(key, _)| seen.insert(*key))
                .map(|&(key, len)| {
                    (
                        key,
                        format!("https://e.com/{}", "x".repeat(usize::from(len))),
                    )
                })
                .collect()
        })
        .collect();
    let links: Vec<Vec<Link<'_>>> = urls
        .iter()
        .enumerate()
        .map(|(b, batch)| {
            batch
                .iter()
                .enumerate()
                .map(|(i, (key, url))| Link {
                    key: *key,
                    id: (b * 16 + i) as u64,
                    url: url.as_bytes(),
                    options: &[],
                })
                .collect()
        })
        .collect();
    let batches: Vec<&[Link<'_>]> = links.iter().map(Vec::as_slice).collect();
    let sealed = encode_sealed_segment(7, &batches);
    let clean_hint = build_hint(7, &sealed).expect("a sealed segment has a hint");
    let mut expected: Vec<(u64, u32)> = Vec::new();
    scan_segment(&sealed, 7, |record, at| {
        let entry = shorty_service::log::hint::HintEntry::of(&record, at);
        expected.push((entry.key, entry.offset))
    })
    .unwrap();

    let mut bytes = sealed.clone();
    for (at, mask) in input.flips.iter().take(4) {
        let i = usize::from(*at) % bytes.len();
        bytes[i] ^= mask;
    }
    if let Some(cut) = input.cut {
        bytes.truncate(usize::from(cut) % bytes.len());
    }
    let hint = match &input.hint {
        HintDamage::None => Some(clean_hint.clone()),
        HintDamage::Lost => None,
        HintDamage::Truncated(n) => Some(clean_hint[..usize::from(*n) % clean_hint.len()].to_vec()),
        HintDamage::Flipped(at, mask) => {
            let mut h = clean_hint.clone();
            let i = usize::from(*at) % h.len();
            h[i] ^= mask;
            Some(h)
        }
        HintDamage::Rewritten(at, with) => {
            let mut h = clean_hint.clone();
            let body = h.len() - 4;
            let start = usize::from(*at) % body;
            for (i, b) in with.iter().enumerate().take(body - start) {
                h[start + i] = *b;
            }
            let crc = crc32c::crc32c(&h[..body]);
            h[body..].copy_from_slice(&crc.to_le_bytes());
            Some(h)
        }
    };
    let hint_intact = hint.as_deref() == Some(&clean_hint[..]);

    let mut files = Mem::default();
    files.0.insert(segment_file_name(7), bytes.clone());
    if let Some(h) = &hint {
        files.0.insert(hint_file_name(7), h.clone());
    }
    let mut loaded = Vec::new();
    let result = recover_segment(&mut files, 7, |e| loaded.push((e.key, e.offset)));
    let verdict = verify_segment(7, &bytes, hint.as_deref());
    if matches!(result, Err(RecoveryError::Scan { .. })) {
        assert!(
            matches!(verdict, Verdict::Refused(_)),
            "verify disagrees: {verdict:?}"
        );
    }
    if bytes.len() < sealed.len() && hint_intact {
        // Refused: as missing bytes (or, with a flip too, maybe first as
        // damage or a renamed file), never recovered shorter.
        assert!(
            matches!(&result, Err(RecoveryError::Scan { .. })),
            "a cut sealed segment with its intact hint must be refused: {result:?}"
        );
        if input.flips.is_empty() {
            assert!(
                matches!(
                    &result,
                    Err(RecoveryError::Scan {
                        error: ScanError::Missing { .. },
                        ..
                    })
                ),
                "{result:?}"
            );
        }
        return;
    }
    let Ok(outcome) = result else { return };
    if bytes == sealed && hint_intact {
        assert!(
            outcome.from_hint,
            "an intact hint was not used: {outcome:?}"
        );
        loaded.sort_unstable();
        expected.sort_unstable();
        assert_eq!(loaded, expected);
    }
    if outcome.from_hint {
        // A hint that passes every check is trusted without reading the
        // segment, but never beyond its sealed bytes (a tombstone's entry
        // has no offset: `TOMBSTONE`).
        let data_len = (sealed.len() - SEAL_LEN) as u32;
        assert!(loaded
            .iter()
            .all(|&(_, at)| at == shorty_service::keydir::TOMBSTONE
                || (at as usize >= PREAMBLE_LEN && at < data_len)));
    } else if input.flips.is_empty() && bytes.len() == sealed.len() {
        // The segment itself is whole: a scan finds exactly its links.
        loaded.sort_unstable();
        expected.sort_unstable();
        assert_eq!(loaded, expected);
    }
}

fn raw_input(input: RawInput) {
    let mut bytes = if input.seed_links > 0 {
        well_formed(input.seed_links % 32)
    } else {
        input.segment.clone()
    };
    for (at, mask) in &input.flips {
        if !bytes.is_empty() {
            let i = *at as usize % bytes.len();
            bytes[i] ^= mask;
        }
    }
    if let Some(cut) = input.cut {
        bytes.truncate(cut as usize);
    }
    let len = bytes.len() as u64;

    let mut scanned = Vec::new();
    let scan = scan_segment(&bytes, 7, |record, offset| {
        let entry = shorty_service::log::hint::HintEntry::of(&record, offset);
        scanned.push((entry.key, u64::from(entry.offset)))
    });
    if let Err(ScanError::Corrupt { offset, .. }) = &scan {
        assert!(
            *offset < len.max(1),
            "refusal at {offset} outside a file of {len}"
        );
    }

    let mut files = Mem::default();
    files.0.insert(segment_file_name(7), bytes.clone());
    if let Some(hint) = &input.hint {
        files.0.insert(hint_file_name(7), hint.clone());
    }
    let mut links = Vec::new();
    let result = recover_segment(&mut files, 7, |e| links.push((e.key, e.offset)));
    let verdict = verify_segment(7, &bytes, input.hint.as_deref());
    match &result {
        Err(RecoveryError::Scan { .. }) => {
            assert!(
                matches!(verdict, Verdict::Refused(_)),
                "verify disagrees: {verdict:?}"
            );
        }
        Err(err) if !matches!(err, RecoveryError::InvalidUrl { .. }) => panic!("{err}"),
        _ => {}
    }
    let Ok(outcome) = result else { return };
    if outcome.from_hint {
        return; // A hint is trusted as long as it matches the seal.
    }
    // What was loaded is what the scan saw, up to any cut.
    for (key, offset) in &links {
        assert!(
            scanned
                .iter()
                .any(|(k, o)| k == key && *o == u64::from(*offset)),
            "loaded a link the scan did not report"
        );
    }
    if outcome.removed {
        assert!(!files.0.contains_key(&segment_file_name(7)));
        return;
    }
    // Recovered output is sealed: a second recovery cuts nothing and loads
    // the same links.
    let after = files.0.get(&segment_file_name(7)).cloned().unwrap();
    assert!(after.len() as u64 <= len + 64);
    let mut again = Vec::new();
    let second = recover_segment(&mut files, 7, |e| again.push((e.key, e.offset)))
        .expect("recovered output recovers");
    assert!(second.cut.is_none() && !second.sealed_now, "{second:?}");
    links.sort_unstable();
    again.sort_unstable();
    assert_eq!(links, again);
}
