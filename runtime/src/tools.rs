//! The offline tools of both server binaries: `verify`, `export`,
//! `import`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shorty_service::codes::{format_code, is_reserved, parse_code, MAX_CODE_LEN};
use shorty_service::keydir::{Ident, KeyDir, Target};
use shorty_service::link::{alias_home, check_alias, AliasHome, LinkMeta, MAX_EXPIRES_AT_MS};
use shorty_service::log::hint::{build_hint, hint_file_name, hint_vouches};
use shorty_service::log::record::{decode_record, Decoded, Keyed, Link, Record, ALIAS_KEY, NO_ID};
use shorty_service::log::recovery::{verify_segment_entries, Verdict};
use shorty_service::log::scan::{scan_vouched, ScanError};
use shorty_service::log::segments::{segment_file_name, SegmentTable};
use shorty_service::log::{
    IoResult, LogConfig, LogFailure, LogIo, LogWriter, SyncPolicy, WriteBatch,
};
use shorty_service::url::UrlPolicy;

use crate::datadir::{self, list_segments, DataDir, KEY_FILE};
use crate::driver::{Step, WriteFailure};

/// One exported link. The options are optional fields, absent for a
/// plain link, so exports of earlier versions still import.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExportedLink {
    /// The short code (or the alias).
    pub code: String,
    /// The long URL.
    pub url: String,
    /// Version of the link's last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Creation time, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<u64>,
    /// Expiry, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Click limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_clicks: Option<u64>,
    /// Own redirect status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_status: Option<u16>,
    /// Where visitors go after expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_url: Option<String>,
    /// Disabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// The owning API key's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key_id: Option<u32>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Query forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_query: Option<bool>,
    /// `true` when `code` is a custom alias.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alias: bool,
}

impl ExportedLink {
    /// The line of a link with `meta`.
    fn new(code: &str, url: &[u8], meta: &LinkMeta) -> Self {
        Self {
            code: code.to_owned(),
            url: String::from_utf8_lossy(url).into_owned(),
            version: (meta.version != 0).then_some(meta.version),
            created_at_ms: meta.created_at_ms,
            expires_at_ms: meta.expires_at_ms,
            max_clicks: meta.max_clicks,
            redirect_status: meta.redirect_status,
            expired_url: meta.expired_url.as_deref().map(Into::into),
            disabled: meta.disabled,
            owner_key_id: meta.owner_key_id,
            title: meta.title.as_deref().map(Into::into),
            forward_query: meta.forward_query,
            alias: meta.alias.is_some(),
        }
    }

    /// The options the line carries.
    fn meta(&self) -> LinkMeta {
        LinkMeta {
            version: self.version.unwrap_or(0),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            max_clicks: self.max_clicks,
            redirect_status: self.redirect_status,
            expired_url: self.expired_url.as_deref().map(Into::into),
            disabled: self.disabled,
            owner_key_id: self.owner_key_id,
            title: self.title.as_deref().map(Into::into),
            forward_query: self.forward_query,
            alias: self.alias.then(|| self.code.as_str().into()),
        }
    }
}

/// Where `export` writes: a file, or standard output when absent or `-`.
fn open_output(out: Option<&Path>) -> io::Result<BufWriter<Box<dyn Write>>> {
    let sink: Box<dyn Write> = match out {
        Some(p) if p != Path::new("-") => Box::new(File::create(p)?),
        _ => Box::new(io::stdout().lock()),
    };
    Ok(BufWriter::new(sink))
}

/// Writes one exported link as a JSON line; `false` (nothing written) for
/// an alias whose options do not decode.
fn write_link(sink: &mut impl Write, link: &Link<'_>) -> io::Result<bool> {
    // Decoded records hold well-formed options; a value out of range
    // (written by a newer version) exports as a plain link.
    let meta = LinkMeta::decode(link.options).unwrap_or_default();
    if link.key == ALIAS_KEY && meta.alias.is_none() {
        // The alias's name is one of those options: without it the line
        // would carry a code nobody made (review 23: two such aliases
        // exported as one made-up code, and their round trip merged them).
        eprintln!(
            "export: an alias to {} has options this version cannot read; not exported",
            String::from_utf8_lossy(link.url)
        );
        return Ok(false);
    }
    let mut buf = [0; MAX_CODE_LEN];
    let code = match &meta.alias {
        Some(alias) => alias,
        None => format_code(link.key, &mut buf),
    };
    let line = ExportedLink::new(code, link.url, &meta);
    serde_json::to_writer(&mut *sink, &line).map_err(io::Error::other)?;
    sink.write_all(b"\n")?;
    Ok(true)
}

/// Prints an export's counts (or why it failed); a damaged segment (its
/// links after the damage not exported) fails the export.
fn report_export(result: Result<(u64, u64), String>) -> ExitCode {
    match result {
        Ok((links, damaged)) => {
            eprintln!("exported {links} links");
            if damaged > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("export: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The highest `version` an import accepts: 2^48, far above the changes
/// any link sees (a change a millisecond for 8,900 years), far below where
/// counting on from it could overflow.
const MAX_IMPORTED_VERSION: u64 = 1 << 48;

/// One line to import: `None` for a blank line, `Some(Err(why))` for one
/// that is not a link this server could hold (counted as invalid), else the
/// link's key, code and URL.
fn parse_import_line(
    line: &str,
    policy: &UrlPolicy,
) -> Option<Result<(u64, ExportedLink), String>> {
    if line.trim().is_empty() {
        return None;
    }
    Some(check_import_line(line, policy))
}

fn check_import_line(line: &str, policy: &UrlPolicy) -> Result<(u64, ExportedLink), String> {
    let link = serde_json::from_str::<ExportedLink>(line).map_err(|e| e.to_string())?;
    // A version no run of Shorty reaches (one per change of the link):
    // near `u64::MAX` every later change would overflow it, and the link
    // could never be changed again (review 9b: UPDATE answered 500, or an
    // alias's UPDATE and DELETE were acknowledged and not applied).
    if link.version.is_some_and(|v| v > MAX_IMPORTED_VERSION) {
        return Err(format!("version above {MAX_IMPORTED_VERSION}"));
    }
    let key = if link.alias {
        check_alias(&link.code).map_err(|e| format!("alias `{}`: {e}", link.code))?;
        match alias_home(&link.code) {
            AliasHome::Key(key) => key,
            AliasHome::Side => ALIAS_KEY,
        }
    } else {
        let key = parse_code(link.code.as_bytes())
            .ok_or_else(|| format!("`{}` is not a code", link.code))?;
        // The generator skips these codes (they spell a route such as
        // `healthz`): one imported would never be reached (review 24).
        if is_reserved(key) {
            return Err(format!("`{}` is a reserved word, not a code", link.code));
        }
        key
    };
    // The options as the wire and the API check them (review 23: an
    // imported `expired_url` with a CR LF went into a 302's head, a
    // `redirect_status` of 200 made the link unreadable and `export`
    // rename it, a year past 9999 aborted the server's API read), except
    // that an expiry already past is kept: the link was made before it.
    // `created_at_ms` has the expiry's range.
    link.meta().check_made(policy).map_err(|e| e.to_string())?;
    if link.created_at_ms.is_some_and(|at| at > MAX_EXPIRES_AT_MS) {
        return Err("created_at_ms past the year 9999".into());
    }
    policy
        .check(link.url.as_bytes(), |_| false)
        .map_err(|e| e.to_string())?;
    Ok((key, link))
}

/// Refused lines an import names on standard error; the rest are counted.
const IMPORT_REFUSALS_SHOWN: u64 = 20;

/// Counts a refused line and names the first [`IMPORT_REFUSALS_SHOWN`].
fn refuse_line(summary: &mut ImportSummary, number: usize, why: &str) {
    summary.invalid += 1;
    if summary.invalid <= IMPORT_REFUSALS_SHOWN {
        eprintln!("import: line {number}: {why}");
    } else if summary.invalid == IMPORT_REFUSALS_SHOWN + 1 {
        eprintln!("import: more invalid lines; only their count follows");
    }
}

/// `verify`: checks every segment and hint; exit 0 when clean.
pub fn verify(dir: &Path) -> ExitCode {
    let numbers = match list_segments(dir) {
        Ok(n) => n,
        Err(err) => {
            eprintln!("verify: {}: {err}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if datadir::in_use(dir) {
        println!(
            "note: a server is running on {}; the segments it is writing show as open",
            dir.display()
        );
    }
    let mut clean = true;
    let mut links = 0;
    match fs::read(dir.join(KEY_FILE)) {
        Ok(key) if key.len() == 16 => {}
        Ok(_) => {
            println!("{KEY_FILE}: damaged (not 16 bytes): codes cannot be made or checked");
            clean = false;
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound && numbers.is_empty() => {}
        Err(err) => {
            println!("{KEY_FILE}: {err}");
            clean = false;
        }
    }
    if let Err(err) = datadir::read_state(dir) {
        println!("{err}: a restart refuses to start");
        clean = false;
    }
    for number in datadir::orphaned_hints(dir).unwrap_or_default() {
        println!(
            "{}: its segment is missing (moved aside?): its links are not loaded, its ids \
             and number are never used again",
            hint_file_name(number)
        );
    }
    let (lines, markers_clean) = verify_markers(dir, &numbers);
    lines.iter().for_each(|l| println!("{l}"));
    clean &= markers_clean;
    // A merge a stop interrupted: a restart settles it before loading
    // (`shorty_service::log::merge::finish_interrupted`); say how, and
    // judge the segments as the restart will see them.
    let merged_away = verify_merge_leftovers(dir, &mut clean);
    let numbers: Vec<u64> = numbers
        .into_iter()
        .filter(|n| !merged_away.contains(n))
        .collect();
    // Every segment's records loaded as a restart loads them, so that
    // recovery's own check finds two records of one key at one version.
    let (table, keydir) = (SegmentTable::new(dir, 0), KeyDir::new());
    let duplicates = datadir::DuplicateCheck::default();
    for number in &numbers {
        let name = segment_file_name(*number);
        let bytes = match fs::read(dir.join(&name)) {
            Ok(b) => b,
            Err(err) => {
                println!("{name}: cannot read: {err}");
                clean = false;
                continue;
            }
        };
        let hint = fs::read(dir.join(hint_file_name(*number))).ok();
        let Some(idx) = table.register(*number) else {
            println!("{name}: too many segments to check");
            clean = false;
            continue;
        };
        let verdict = verify_segment_entries(*number, &bytes, hint.as_deref(), |entry| {
            if let Err(same) = keydir.recover(entry.ident(), entry.target(idx), entry.version) {
                duplicates.add(&table, *number, idx, entry, same);
            }
        });
        match verdict {
            Verdict::Sealed {
                links: n,
                hint_problem,
            } => {
                links += n;
                match hint_problem {
                    None => println!("{name}: sealed, {n} links, hint ok"),
                    Some(p) => println!("{name}: sealed, {n} links; {p}: a restart rebuilds it"),
                }
            }
            Verdict::Open { links: n } => {
                links += n;
                println!(
                    "{name}: unsealed (an unclean stop), {n} links, whole: a restart seals it"
                );
            }
            Verdict::Torn {
                links: n,
                valid_len,
                len,
                reason,
            } => {
                links += n;
                clean = false;
                println!(
                    "{name}: {n} links, then damage at byte offset {valid_len} ({reason}) in the \
                     unacknowledged tail: a restart cuts bytes {valid_len}..{len}"
                );
            }
            Verdict::Refused(err) => {
                clean = false;
                println!("{name}: {err}: a restart refuses to start");
            }
        }
    }
    if let Err(err) = duplicates.finish(dir, &table, &keydir) {
        println!("{err}");
        clean = false;
    }
    if clean {
        println!("clean: {} segments, {links} links", numbers.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "NOT clean: {} segments, {links} readable links",
            numbers.len()
        );
        ExitCode::FAILURE
    }
}

/// What `verify` says about the files that record what a segment or a
/// merge no longer shows: a damaged segment's marker (merges forget no
/// tombstone while it has no segment) and the merges' `.forgotten` files
/// (the deletes an import must never undo; a damaged one makes imports
/// refuse to run).
fn verify_markers(dir: &Path, segments: &[u64]) -> (Vec<String>, bool) {
    let (mut lines, mut clean) = (Vec::new(), true);
    use shorty_service::log::merge::{decode_forgotten, parse_forgotten_file_name};
    use shorty_service::log::segments::parse_damaged_file_name;
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in &names {
        if let Some(n) = parse_damaged_file_name(name) {
            if segments.contains(&n) {
                lines.push(format!(
                    "{name}: {} was refused at a start as damaged; a start that loads it \
                     removes this marker",
                    segment_file_name(n)
                ));
            } else {
                lines.push(format!(
                    "{name}: {} was refused at a start as damaged and is missing (moved \
                     aside?): merges forget no deletes until it is back, or this marker is \
                     removed to give it up",
                    segment_file_name(n)
                ));
            }
        } else if let Some(n) = parse_forgotten_file_name(name) {
            match fs::read(dir.join(name))
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    decode_forgotten(&b, n)
                        .map(Iterator::count)
                        .map_err(|e| e.to_string())
                }) {
                Ok(deletes) => lines.push(format!(
                    "{name}: {deletes} deletes a merge forgot: an import never brings them back"
                )),
                Err(err) => {
                    lines.push(format!(
                        "{name}: damaged ({err}): an import refuses to run; restore it from a \
                         backup"
                    ));
                    clean = false;
                }
            }
        }
    }
    (lines, clean)
}

/// What `verify` says about a merge's leftovers; returns the segments a
/// restart removes (the inputs of a committed merge), which are not
/// checked. A merged segment is an ordinary sealed segment: nothing else
/// tells it apart.
fn verify_merge_leftovers(dir: &Path, clean: &mut bool) -> Vec<u64> {
    use shorty_service::log::merge::{Manifest, MANIFEST_FILE, MERGING_SUFFIX};
    let mut away = Vec::new();
    let names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    match fs::read(dir.join(MANIFEST_FILE)) {
        Ok(bytes) => match Manifest::decode(&bytes) {
            Some(m) => {
                let present = |n: u64| {
                    names.iter().any(|x| {
                        *x == segment_file_name(n)
                            || *x == format!("{}{MERGING_SUFFIX}", segment_file_name(n))
                    })
                };
                if m.outputs.iter().all(|&n| present(n)) {
                    println!(
                        "{MANIFEST_FILE}: a merge was interrupted after its commit: a restart \
                         finishes it, removing segments {:?} (merged into {:?})",
                        m.inputs, m.outputs
                    );
                    away = m.inputs;
                } else {
                    println!(
                        "{MANIFEST_FILE}: a merge was interrupted and an output is missing: a \
                         restart undoes it, removing segments {:?} and keeping {:?}",
                        m.outputs, m.inputs
                    );
                    away = m.outputs;
                }
            }
            None => {
                println!("{MANIFEST_FILE}: damaged: a restart refuses to start");
                *clean = false;
            }
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            println!("{MANIFEST_FILE}: {err}");
            *clean = false;
        }
    }
    for name in names.iter().filter(|n| n.ends_with(MERGING_SUFFIX)) {
        println!("{name}: merge output, not committed or not yet renamed: a restart settles it");
    }
    away
}

/// `export`: every link, as JSON lines.
pub fn export(dir: &Path, out: Option<&Path>) -> ExitCode {
    let result = (|| -> io::Result<(u64, u64)> {
        let mut sink = open_output(out)?;
        let counts = export_links(dir, &mut sink)?;
        sink.flush()?;
        Ok(counts)
    })();
    report_export(result.map_err(|e| e.to_string()))
}

/// Writes every vouched-for link of `dir` to `sink` as JSON lines; returns
/// the links written and the damaged segments.
///
/// Only vouched bytes are exported (a seal, a commit marker or an intact
/// hint proves them durable before anything after them was acknowledged):
/// the unvouched tail of a segment being written may hold a batch that
/// failed ("disk full") and was never acknowledged, still in the page cache
/// until the writer cuts it. An acknowledged batch is vouched for within
/// [`VOUCH_DELAY`](shorty_service::log::VOUCH_DELAY) of its sync.
///
/// # Errors
/// Reading a segment or writing to `sink` failed.
pub fn export_links(dir: &Path, sink: &mut impl Write) -> io::Result<(u64, u64)> {
    export_links_between(dir, sink, || {})
}

/// [`export_links`], calling `between` between its two passes (where a
/// running server's writes and merges land, in a test).
fn export_links_between(
    dir: &Path,
    sink: &mut impl Write,
    between: impl FnOnce(),
) -> io::Result<(u64, u64)> {
    // Both passes read the same bytes: every file is opened before either
    // pass (a merge that commits meanwhile unlinks its inputs, but open
    // files stay readable), and the second pass reads no further than the
    // first did (a running server appends to its active segments; an
    // update seen by the second pass only would export its key twice,
    // the older URL beside the newer). A merge does not empty the segments
    // it retires while this shared lock is held (`merge::READERS_FILE`),
    // taken read-only when the reader may not write.
    let _readers = crate::merge::lock_for_reading(dir)?;
    let mut files = open_segments(dir)?;
    // First the newest version of every mutated key (a small map: keys
    // never changed are not in it), so that only the winning record of a
    // key is exported and a deleted link not at all, whatever the order
    // of the files.
    let mut newest: HashMap<OwnedIdent, (u64, bool)> = HashMap::new();
    vouched_records(&mut files, &mut |record, _| {
        if record.version() != 0 || matches!(record, Keyed::Tombstone(_)) {
            let entry = newest.entry(export_ident(&record)).or_insert((0, false));
            if record.version() >= entry.0 {
                *entry = (record.version(), matches!(record, Keyed::Tombstone(_)));
            }
        }
        Ok(())
    })?;
    between();
    vouched_records(&mut files, &mut |record, links| {
        let Keyed::Link(link) = record else {
            return Ok(());
        };
        let wins = match newest.get(&export_ident(&record)) {
            None => true,
            Some(&(version, deleted)) => !deleted && version == link.version(),
        };
        if wins && write_link(sink, &link)? {
            *links += 1;
        }
        Ok(())
    })
}

/// A key and, for an alias that is not a code, its text.
type OwnedIdent = (u64, Option<Box<[u8]>>);

/// The link a record is of, as the key directory names it
/// ([`Keyed::side_alias`]): a generated SHORTEN that lost its code to a
/// code-spelled alias wrote a version-0 record of the key, which the
/// alias's newer version beats (review 11: keyed by the alias's text, the
/// export wrote both, the loser sometimes last).
fn export_ident(record: &Keyed<'_>) -> OwnedIdent {
    (record.key(), record.side_alias().map(Box::from))
}

/// One segment of an export, open from the start.
struct OpenSegment {
    number: u64,
    segment: File,
    hint: Option<File>,
    /// What the first pass found: the second reads no further and reads
    /// no hint.
    first: Option<FirstPass>,
}

/// What the first pass of an export found in one segment.
#[derive(Debug, Clone, Copy)]
struct FirstPass {
    /// The bytes its hint vouches for.
    by_hint: u64,
    /// Where its vouched bytes end.
    end: u64,
    /// It holds damage.
    damaged: bool,
}

/// Times [`open_segments`] lists the directory again when a listed
/// segment vanished before it was opened (a merge committed, or recovery
/// removed an empty segment).
const OPEN_ATTEMPTS: usize = 20;

/// Opens every segment of `dir` and its hint. A listed segment that is
/// gone by the time it is opened means a merge committed in between: its
/// outputs are not in the list, so the whole set is listed and opened
/// again, until one listing opens completely (then every record of that
/// moment is in a file held open).
fn open_segments(dir: &Path) -> io::Result<Vec<OpenSegment>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut files = Vec::new();
        let mut vanished = false;
        for number in list_segments(dir)? {
            let segment = match File::open(dir.join(segment_file_name(number))) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    vanished = true;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let hint = File::open(dir.join(hint_file_name(number))).ok();
            files.push(OpenSegment {
                number,
                segment,
                hint,
                first: None,
            });
        }
        if !vanished {
            // A merge between its commit point and its end has both its
            // inputs and its outputs in place, every live record of the
            // inputs copied to the outputs (which hold nothing else): an
            // export holding both would write those links twice (review
            // 6, F6). The manifest is read after the files were opened and
            // trusted only if none of them vanished meanwhile: a merge
            // removes its inputs before its manifest, so a manifest gone
            // by then means no merge overlapped the listing, or one whose
            // inputs were caught gone. With every input held, the outputs
            // (some perhaps not yet renamed) are left out; with an input
            // already removed, every output was renamed before it, and the
            // inputs left are left out.
            let manifest = fs::read(dir.join(shorty_service::log::merge::MANIFEST_FILE))
                .ok()
                .and_then(|b| shorty_service::log::merge::Manifest::decode(&b));
            let still_there = files
                .iter()
                .all(|f| dir.join(segment_file_name(f.number)).exists());
            if still_there {
                if let Some(m) = manifest {
                    let holds = |n: &u64| files.iter().any(|f| f.number == *n);
                    if m.inputs.iter().all(holds) {
                        files.retain(|f| !m.outputs.contains(&f.number));
                    } else {
                        files.retain(|f| !m.inputs.contains(&f.number));
                    }
                }
                return Ok(files);
            }
        }
        if attempt >= OPEN_ATTEMPTS {
            return Ok(files);
        }
    }
}

/// The first `limit` bytes of an open file (all of it: `u64::MAX`).
fn read_prefix(mut file: &File, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Calls `each` with every vouched-for keyed record of `files`, in file
/// order; returns the count `each` kept and the damaged segments. The
/// first call records where each file's vouched bytes end; later calls
/// stop there.
fn vouched_records(
    files: &mut [OpenSegment],
    each: &mut dyn FnMut(Keyed<'_>, &mut u64) -> io::Result<()>,
) -> io::Result<(u64, u64)> {
    let (mut links, mut damaged) = (0, 0);
    for file in files {
        let number = file.number;
        let (bytes, first) = match file.first {
            Some(first) => (read_prefix(&file.segment, first.end)?, first),
            None => {
                let bytes = read_prefix(&file.segment, u64::MAX)?;
                let hint = match &file.hint {
                    Some(hint) => Some(read_prefix(hint, u64::MAX)?),
                    None => None,
                };
                let by_hint = hint_vouches(hint.as_deref(), number);
                // First where the vouched bytes end, then the links inside
                // them: two scans, so a 1 GiB segment costs no list of its
                // links.
                let (end, damaged) = match scan_vouched(&bytes, number, by_hint, |_, _| {}) {
                    Ok(scan) => (scan.vouched_end.min(bytes.len() as u64), false),
                    Err(err) => {
                        eprintln!(
                            "export: {}: {err}; exported what precedes it",
                            segment_file_name(number)
                        );
                        let end = match err {
                            // Everything before the damage is vouched for.
                            ScanError::Corrupt { offset, .. } => offset,
                            ScanError::Missing { len, .. } => len,
                            _ => 0,
                        };
                        (end, true)
                    }
                };
                let first = FirstPass {
                    by_hint,
                    end,
                    damaged,
                };
                file.first = Some(first);
                (bytes, first)
            }
        };
        let (end, by_hint, damage) = (first.end, first.by_hint, first.damaged);
        damaged += u64::from(damage);
        let mut failed = None;
        // `bytes` ends where the vouched bytes do (at the damage, in a
        // damaged segment): the hint's claim is capped there, or the scan
        // would call the prefix short of it and yield nothing (review 9: a
        // damaged segment beside its hint exported none of its links).
        let _ = scan_vouched(&bytes, number, by_hint.min(end), |record, offset| {
            let len = match &record {
                Keyed::Link(link) => link.encoded_len(),
                Keyed::Tombstone(t) => t.encoded_len(),
            };
            if failed.is_some() || offset + len as u64 > end {
                return;
            }
            if let Err(err) = each(record, &mut links) {
                failed = Some(err);
            }
        });
        if let Some(err) = failed {
            return Err(err);
        }
    }
    Ok((links, damaged))
}

/// Writes one batch with `std::fs`, the way the backends do through their
/// runtimes (for `import`, which runs no runtime).
pub fn write_batch_std(batch: &WriteBatch) -> Result<(), WriteFailure> {
    let path = &batch.segment.path;
    let file = if batch.create {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(WriteFailure::at(Step::Create))?
    } else {
        OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(WriteFailure::at(Step::Write))?
    };
    file.write_all_at(&batch.bytes, batch.offset)
        .map_err(WriteFailure::at(Step::Write))?;
    if batch.sync {
        file.sync_data().map_err(WriteFailure::at(Step::Sync))?;
    }
    if batch.sync_dir {
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(WriteFailure::at(Step::Sync))?;
        }
    }
    Ok(())
}

/// Counts of an import.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Links added.
    pub imported: u64,
    /// Already present with the same URL.
    pub present: u64,
    /// Refused: the code maps to another URL (at a version not newer
    /// than the one here).
    pub conflicts: u64,
    /// Of the links added, those that replaced an older version of a link
    /// here (the line's `version` is above it).
    pub updated: u64,
    /// Refused: the code was deleted here (a merge forgot its record), and
    /// a deleted code is never handed out again.
    pub deleted: u64,
    /// Refused: not a valid code, URL or JSON line.
    pub invalid: u64,
}

/// Every link a merge of `dir` forgot the tombstone of (its key or alias,
/// and when it was deleted: the latest, if forgotten twice), from the
/// merges' `*.forgotten` files (`log::merge::forgotten_file_name`).
///
/// # Errors
/// A file cannot be read or is damaged: an import then refuses to run
/// rather than bring a deleted link back.
pub fn forgotten_tombstones(
    dir: &Path,
) -> Result<HashMap<shorty_service::keydir::OwnedIdent, u64>, String> {
    use shorty_service::keydir::OwnedIdent;
    use shorty_service::log::merge::{decode_forgotten, parse_forgotten_file_name};
    let mut forgotten = HashMap::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(parse_forgotten_file_name) else {
            continue;
        };
        let path = entry.path();
        let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tombstones = decode_forgotten(&bytes, number).map_err(|e| {
            format!(
                "{}: damaged ({e}); restore it from a backup",
                path.display()
            )
        })?;
        for tombstone in tombstones {
            let ident = match (&tombstone.alias, tombstone.key) {
                (Some(alias), ALIAS_KEY) => OwnedIdent::Alias(alias.clone()),
                (_, key) => OwnedIdent::Key(key),
            };
            let at = forgotten.entry(ident).or_insert(0);
            *at = tombstone.deleted_at_ms.max(*at);
        }
    }
    Ok(forgotten)
}

/// Prints an import's counts (or why it failed).
fn report_import(result: Result<ImportSummary, String>) -> ExitCode {
    match result {
        Ok(s) => {
            eprintln!(
                "imported {} links; {} already present; {} refused (code maps to another URL); \
                 {} refused (code deleted here, never handed out again); {} invalid lines; {} of \
                 the imported were newer versions of links here",
                s.imported, s.present, s.conflicts, s.deleted, s.invalid, s.updated
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("import: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What an import accepts: any URL a record can hold, with credentials or
/// without (a server run with `--allow-userinfo` exports them: review 24
/// lost them on the way back). With the server's `--public-url`, no URL or
/// expired-URL under it, as that server refuses them (a link sent to
/// itself is a redirect loop, review 24); without it a placeholder base,
/// which nothing is under.
fn import_policy(public_url: Option<&url::Url>) -> Result<UrlPolicy, String> {
    let max = shorty_service::log::record::MAX_URL_IN_RECORD;
    let policy = match public_url {
        Some(base) => UrlPolicy::new(max, base.clone()).refuse_self_links(true),
        None => {
            let base = url::Url::parse("http://invalid.invalid/").map_err(|e| e.to_string())?;
            UrlPolicy::new(max, base)
        }
    };
    Ok(policy.allow_userinfo(true))
}

/// The lines to import: a file, or standard input for `-`.
fn open_input(input: &Path) -> Result<Box<dyn BufRead>, String> {
    if input == Path::new("-") {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let file = File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    Ok(Box::new(BufReader::new(file)))
}

/// `import`: loads JSON lines into a stopped server's directory;
/// `public_url` is the server's `--public-url`, if it has one.
pub fn import(dir: &Path, input: &Path, public_url: Option<&url::Url>) -> ExitCode {
    report_import(
        import_policy(public_url)
            .and_then(|policy| import_with(dir, input, &policy, IMPORT_PENDING_BYTES)),
    )
}

fn read_url(table: &SegmentTable, keydir: &KeyDir, ident: Ident<'_>) -> Option<Vec<u8>> {
    let Some((Target::Live(loc), _)) = keydir.lookup(ident) else {
        return None;
    };
    let key = match ident {
        Ident::Key(key) => key,
        Ident::Alias(_) => ALIAS_KEY,
    };
    let segment = table.get(loc.file)?;
    let file = File::open(&segment.path).ok()?;
    let mut buf = vec![0; 64 * 1024];
    let n = file.read_at(&mut buf, u64::from(loc.offset)).ok()?;
    match decode_record(&buf[..n]) {
        Decoded::Record(Record::Link(link), _) if link.key == key => Some(link.url.to_vec()),
        _ => None,
    }
}

/// Imports, returning the counts.
///
/// # Errors
/// As a message: the directory is in use, unreadable, or a write failed.
pub fn import_into(dir: &Path, input: &Path) -> Result<ImportSummary, String> {
    import_with(dir, input, &import_policy(None)?, IMPORT_PENDING_BYTES)
}

/// Bytes of records the import's log writer may hold before a batch is
/// written (the server's own limit).
const IMPORT_PENDING_BYTES: usize = 64 << 20;

/// Links written per batch at most (bounds the set of codes pending).
const IMPORT_BATCH_LINKS: usize = 10_000;

/// Why an import could not append a record. The server's own message for
/// [`LogFailure::Busy`] says "retry", which helps a client of a busy server
/// but never an import: its batches are written before the limit is
/// reached, so a refusal means the record cannot fit at all.
fn import_failure(failure: LogFailure, record: usize, max_pending_bytes: usize) -> String {
    match failure {
        LogFailure::Busy => format!(
            "a record of {record} bytes does not fit the log writer's batch limit of \
             {max_pending_bytes} bytes"
        ),
        LogFailure::DiskFull => {
            "disk full: free space, then import again (links already imported are counted \
             as present)"
                .to_owned()
        }
        LogFailure::Broken => failure.message().to_owned(),
    }
}

/// [`import_into`] with the writer's pending limit given, so a test can
/// reach it with a small input.
fn import_with(
    dir: &Path,
    input: &Path,
    policy: &UrlPolicy,
    max_pending_bytes: usize,
) -> Result<ImportSummary, String> {
    let data = DataDir::open(dir).map_err(|e| e.to_string())?;
    // A directory made by an import gets its key now, as a server's would.
    data.load_or_create_key().map_err(|e| e.to_string())?;
    let keydir = Arc::new(KeyDir::new());
    let table = Arc::new(SegmentTable::new(data.path(), 0));
    datadir::recover(data.path(), &table, &keydir, 2).map_err(|e| e.to_string())?;
    // The links deleted here whose tombstones a merge forgot: they stay
    // deleted (review 5: an old export brought one back). Asked of the
    // merges' own record of them, not inferred from "below the id floor
    // and unknown", which is also what a link lost with a damaged segment
    // or made after a restored backup looks like, and those the README's
    // remedies import back (review 6).
    let forgotten = forgotten_tombstones(data.path())?;
    let reader = open_input(input)?;
    let mut writer = LogWriter::new(
        LogConfig {
            segment_bytes: 64 << 20,
            sync: SyncPolicy::Always,
            retry_interval: Duration::from_secs(1),
            max_pending_bytes,
        },
        table.clone(),
    );
    let mut summary = ImportSummary::default();
    let mut pending = std::collections::HashSet::new();
    let mut pending_bytes = 0;
    let mut written = Vec::new();
    let run = |writer: &mut LogWriter, written: &mut Vec<u64>| -> Result<(), String> {
        while let Some(io) = writer.poll_io(Instant::now()) {
            let LogIo::Write(batch) = &io else {
                return Err("unexpected repair".into());
            };
            let result = match write_batch_std(batch) {
                Ok(()) => IoResult::Ok,
                Err(f) => {
                    return Err(format!(
                        "{}: {:?}: {}",
                        batch.segment.path.display(),
                        f.step,
                        f.error
                    ))
                }
            };
            for (link, offset) in batch.links() {
                let alias = link.alias().and_then(|a| std::str::from_utf8(a).ok());
                let ident = match alias {
                    Some(alias) if link.key == ALIAS_KEY => Ident::Alias(alias),
                    _ => Ident::Key(link.key),
                };
                let loc = shorty_service::keydir::Location {
                    file: batch.segment.idx,
                    offset: offset as u32,
                };
                // Each key is written once per import (checked above).
                let _ = keydir.recover(ident, Target::Live(loc), link.version());
            }
            let settled = writer.io_done(result, Instant::now());
            if let Some((segment, _)) = settled.sealed {
                written.push(segment.number);
            }
        }
        Ok(())
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let (key, link) = match parse_import_line(&line, policy) {
            None => continue,
            Some(Err(why)) => {
                refuse_line(&mut summary, i + 1, &why);
                continue;
            }
            Some(Ok(parsed)) => parsed,
        };
        let url = link.url.as_str();
        let mut meta = link.meta();
        let ident_owned = (key, meta.alias.clone());
        let ident = match &ident_owned {
            (ALIAS_KEY, Some(alias)) => Ident::Alias(alias),
            _ => Ident::Key(key),
        };
        // The record's size at most: its options may yet gain a version
        // (a tombstone below), at most a TLV of a u64 and the options'
        // own length prefix.
        let most_len =
            Link::plain(key, NO_ID, url.as_bytes()).encoded_len() + 4 + meta.encoded_len() + 16;
        if pending.contains(&ident_owned)
            || pending.len() >= IMPORT_BATCH_LINKS
            || pending_bytes + most_len > max_pending_bytes
        {
            // Write what waits: the same code twice in the file (write the
            // first, then compare), or a batch as large as the writer holds
            // (counted in bytes: 9,000 links of 8 KB fill 64 MiB).
            run(&mut writer, &mut written)?;
            pending.clear();
            pending_bytes = 0;
        }
        // When it was deleted here, if it was: its tombstone is still in a
        // segment, or a merge forgot it and wrote it down.
        let mut deleted_at = match &meta.alias {
            Some(alias) if key == ALIAS_KEY => forgotten
                .get(&shorty_service::keydir::OwnedIdent::Alias(alias.clone()))
                .copied(),
            _ => forgotten
                .get(&shorty_service::keydir::OwnedIdent::Key(key))
                .copied(),
        };
        let mut newer = false;
        match keydir.lookup(ident) {
            // A newer version of a link here: a change made after this
            // directory was copied (an update made after a backup, which
            // the README's restore remedy re-applies from a later export).
            // Written with its version, it outranks the record here when
            // the directory is read again (review 9: it was refused as
            // "maps to another URL" and the restored link kept its old
            // URL).
            Some((Target::Live(_), state)) if meta.version > state.installed => newer = true,
            Some((Target::Live(_), _)) => {
                let same = read_url(&table, &keydir, ident).is_some_and(|u| u == url.as_bytes());
                if same {
                    summary.present += 1;
                } else {
                    summary.conflicts += 1;
                }
                continue;
            }
            Some((Target::Deleted { deleted_at_ms, .. }, state)) => {
                deleted_at = Some(deleted_at_ms);
                // If it is imported (an alias claimed again after the
                // delete, below), its record must outrank the tombstone
                // when the directory is read again.
                meta.version = meta.version.max(state.installed + 1);
            }
            None => {}
        }
        // A deleted code is never handed out again, so its line is an
        // export from before the delete. An alias claimed again after its
        // quarantine, and then exported, was created after the delete:
        // that one is imported.
        if deleted_at.is_some_and(|at| meta.created_at_ms.is_none_or(|made| made <= at)) {
            summary.deleted += 1;
            continue;
        }
        let mut options = Vec::with_capacity(meta.encoded_len());
        meta.encode(&mut options);
        let record = Link {
            key,
            id: NO_ID,
            url: url.as_bytes(),
            options: &options,
        };
        let record_len = record.encoded_len();
        writer
            .append(&record, summary.imported)
            .map_err(|f| import_failure(f, record_len, max_pending_bytes))?;
        pending.insert(ident_owned);
        pending_bytes += record_len;
        summary.imported += 1;
        summary.updated += u64::from(newer);
    }
    writer.begin_shutdown();
    run(&mut writer, &mut written)?;
    for number in written {
        let bytes =
            fs::read(data.path().join(segment_file_name(number))).map_err(|e| e.to_string())?;
        if let Some(hint) = build_hint(number, &bytes) {
            datadir::write_atomic(data.path(), &hint_file_name(number), &hint)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(summary)
}

fn store_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `export --store`: every link of a Redis store, as JSON lines.
pub fn export_redis(spec: &crate::config::RedisSpec, out: Option<&Path>) -> ExitCode {
    let result = (|| -> Result<(u64, u64), String> {
        let mut sink = open_output(out).map_err(|e| e.to_string())?;
        let counts = export_redis_links(spec, &mut sink)?;
        sink.flush().map_err(|e| e.to_string())?;
        Ok(counts)
    })();
    report_export(result)
}

/// Writes every link of a Redis store to `sink` as JSON lines; returns the
/// links written and the damaged values skipped.
///
/// # Errors
/// The store fails, or writing to `sink` does.
pub fn export_redis_links(
    spec: &crate::config::RedisSpec,
    sink: &mut impl Write,
) -> Result<(u64, u64), String> {
    {
        let rt = store_runtime().map_err(|e| e.to_string())?;
        let mut links = 0;
        let mut damaged = 0;
        rt.block_on(async {
            for node in crate::redis_store::primaries(spec)
                .await
                .map_err(|e| e.to_string())?
            {
                let client = redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("{node}: {e}"))?;
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{}*", crate::redis_store::LINK_PREFIX))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("{node}: {e}"))?;
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("GET").arg(key);
                    }
                    let urls: Vec<Option<Vec<u8>>> = if keys.is_empty() {
                        Vec::new()
                    } else {
                        pipe.query_async(&mut conn)
                            .await
                            .map_err(|e| format!("{node}: {e}"))?
                    };
                    for (key, value) in keys.iter().zip(urls) {
                        let (Some(code), Some(value)) =
                            (key.strip_prefix(crate::redis_store::LINK_PREFIX), value)
                        else {
                            continue;
                        };
                        // A plain link is its bare URL; a link with
                        // options carries them; a deleted one is skipped.
                        let (url, meta) = match crate::redis_link::decode(value.into()) {
                            Ok(crate::redis_link::Stored::Link { url, meta, .. }) => {
                                (url, meta.unwrap_or_default())
                            }
                            Ok(crate::redis_link::Stored::Deleted(_)) => continue,
                            Err(reason) => {
                                eprintln!("export: {key}: damaged ({reason}); not exported");
                                damaged += 1;
                                continue;
                            }
                        };
                        let line = ExportedLink::new(code, &url, &meta);
                        serde_json::to_writer(&mut *sink, &line).map_err(|e| e.to_string())?;
                        sink.write_all(b"\n").map_err(|e| e.to_string())?;
                        links += 1;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok::<(), String>(())
        })?;
        Ok((links, damaged))
    }
}

/// `import --store`: loads JSON lines into a Redis store, keeping codes.
pub fn import_redis(
    spec: &crate::config::RedisSpec,
    input: &Path,
    public_url: Option<&url::Url>,
) -> ExitCode {
    let result = (|| -> Result<ImportSummary, String> {
        let rt = store_runtime().map_err(|e| e.to_string())?;
        let reader = open_input(input)?;
        let policy = import_policy(public_url)?;
        rt.block_on(async {
            let conn = crate::redis_store::connect(spec, Duration::from_secs(5), false)
                .await
                .map_err(|e| e.to_string())?;
            let mut summary = ImportSummary::default();
            let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
            let mut lines = reader.lines().enumerate();
            loop {
                let (number, line) = match lines.next() {
                    Some((i, line)) => (i + 1, Some(line.map_err(|e| e.to_string())?)),
                    None => (0, None),
                };
                match line.as_deref().and_then(|l| parse_import_line(l, &policy)) {
                    Some(Ok((_, link))) => {
                        // The store's value (crate::redis_link): the bare
                        // URL for a plain link, as SHORTEN writes it.
                        let mut meta = link.meta();
                        let value = if meta.is_plain() {
                            link.url.into_bytes()
                        } else {
                            let version = std::mem::take(&mut meta.version);
                            let mut options = Vec::with_capacity(meta.encoded_len());
                            meta.encode(&mut options);
                            crate::redis_link::encode_link(version, link.url.as_bytes(), &options)
                        };
                        batch.push((link.code, value));
                    }
                    Some(Err(why)) => refuse_line(&mut summary, number, &why),
                    None if line.is_some() => continue,
                    None => {}
                }
                if batch.len() >= 256 || (line.is_none() && !batch.is_empty()) {
                    let mut set = tokio::task::JoinSet::new();
                    for (code, url) in batch.drain(..) {
                        let mut conn = conn.clone();
                        set.spawn(async move {
                            let name = format!("{}{code}", crate::redis_store::LINK_PREFIX);
                            conn.set_nx_or_compare(&name, &url).await
                        });
                    }
                    while let Some(done) = set.join_next().await {
                        match done
                            .map_err(|e| e.to_string())?
                            .map_err(|e| e.to_string())?
                        {
                            crate::redis_store::SetOutcome::Stored => summary.imported += 1,
                            crate::redis_store::SetOutcome::Same => summary.present += 1,
                            crate::redis_store::SetOutcome::Other => summary.conflicts += 1,
                        }
                    }
                }
                if line.is_none() {
                    break;
                }
            }
            Ok(summary)
        })
    })();
    report_import(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of an export of `n` links with URLs of `url_bytes` bytes.
    fn export_lines(n: u64, url_bytes: usize) -> String {
        let mut text = String::new();
        for i in 0..n {
            let mut code = [0; MAX_CODE_LEN];
            // Spread over the 7-character code space.
            let code = format_code(i * 7_919 + 12_345, &mut code).to_owned();
            let prefix = format!("https://example.com/{i}/");
            let url = format!("{prefix}{}", "u".repeat(url_bytes - prefix.len()));
            let line = ExportedLink {
                code,
                url,
                ..Default::default()
            };
            text.push_str(&serde_json::to_string(&line).unwrap());
            text.push('\n');
        }
        text
    }

    /// Edits and deletes: an export holds the newest version of each link
    /// with its options, no deleted link, and imports back the same.
    #[test]
    fn a_code_spelled_alias_is_exported_once_beside_the_shorten_it_beat() {
        // Review 11: a SHORTEN that lost its generated code to a
        // code-spelled alias claimed meanwhile left a version-0 record of
        // the key; the alias's record (version 1) carries its text. Both
        // were exported, in either order.
        use shorty_service::log::segments::encode_sealed_records;
        let mut buf = [0; MAX_CODE_LEN];
        let code = format_code(10, &mut buf).to_owned();
        let alias = {
            let mut out = Vec::new();
            LinkMeta {
                version: 1,
                alias: Some(code.as_str().into()),
                ..LinkMeta::default()
            }
            .encode(&mut out);
            out
        };
        let lost = Keyed::Link(Link::plain(10, 5, b"https://e.com/lost"));
        let won = Keyed::Link(Link {
            options: &alias,
            ..Link::plain(10, NO_ID, b"https://e.com/alias")
        });
        for records in [[lost, won], [won, lost]] {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            fs::create_dir(&data).unwrap();
            let segment = encode_sealed_records(0, &[&records]);
            fs::write(data.join(segment_file_name(0)), segment).unwrap();
            let mut out = Vec::new();
            let (links, _) = export_links(&data, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert_eq!(links, 1, "{text}");
            let line: ExportedLink = serde_json::from_str(text.trim()).unwrap();
            assert_eq!(
                (line.code.as_str(), line.url.as_str()),
                (code.as_str(), "https://e.com/alias")
            );
            assert!(line.alias);
        }
    }

    #[test]
    fn export_keeps_the_newest_version_and_options_and_imports_them_back() {
        use shorty_service::log::record::Tombstone;
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let options = |meta: LinkMeta| {
            let mut out = Vec::new();
            meta.encode(&mut out);
            out
        };
        let v2 = options(LinkMeta {
            version: 2,
            expires_at_ms: Some(1_900_000_000_000),
            title: Some("t".into()),
            ..LinkMeta::default()
        });
        let v1 = options(LinkMeta {
            version: 1,
            ..LinkMeta::default()
        });
        let alias = options(LinkMeta {
            version: 1,
            alias: Some("promo".into()),
            max_clicks: Some(5),
            ..LinkMeta::default()
        });
        // Newest first on disk: the order of files decides nothing.
        let first = encode_sealed_records(
            0,
            &[&[
                Keyed::Link(Link {
                    options: &v2,
                    ..Link::plain(7, NO_ID, b"https://e.com/v2")
                }),
                Keyed::Tombstone(Tombstone {
                    key: 8,
                    version: 1,
                    deleted_at_ms: 1,
                    alias: None,
                }),
                Keyed::Link(Link {
                    options: &alias,
                    ..Link::plain(ALIAS_KEY, NO_ID, b"https://e.com/a")
                }),
            ]],
        );
        let second = encode_sealed_records(
            1,
            &[&[
                Keyed::Link(Link::plain(7, 1, b"https://e.com/v0")),
                Keyed::Link(Link {
                    options: &v1,
                    ..Link::plain(7, NO_ID, b"https://e.com/v1")
                }),
                Keyed::Link(Link::plain(8, 2, b"https://e.com/8")),
                Keyed::Link(Link::plain(9, 3, b"https://e.com/9")),
            ]],
        );
        fs::write(data.join(segment_file_name(0)), first).unwrap();
        fs::write(data.join(segment_file_name(1)), second).unwrap();
        let mut out = Vec::new();
        let (links, damaged) = export_links(&data, &mut out).unwrap();
        assert_eq!((links, damaged), (3, 0));
        let lines: Vec<ExportedLink> = String::from_utf8(out.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut buf = [0; MAX_CODE_LEN];
        let code7 = format_code(7, &mut buf).to_owned();
        let by_code: HashMap<&str, &ExportedLink> =
            lines.iter().map(|l| (l.code.as_str(), l)).collect();
        assert_eq!(by_code[code7.as_str()].url, "https://e.com/v2");
        assert_eq!(by_code[code7.as_str()].version, Some(2));
        assert_eq!(
            by_code[code7.as_str()].expires_at_ms,
            Some(1_900_000_000_000)
        );
        assert!(by_code["promo"].alias && by_code["promo"].max_clicks == Some(5));
        assert!(!by_code.contains_key(format_code(8, &mut buf)), "deleted");
        // Into an empty directory: the same links, options and all.
        let input = dir.path().join("links.jsonl");
        fs::write(&input, &out).unwrap();
        let copy = dir.path().join("copy");
        let summary = import_into(&copy, &input).unwrap();
        assert_eq!(summary.imported, 3);
        let mut again = Vec::new();
        export_links(&copy, &mut again).unwrap();
        let mut a: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
        let mut b: Vec<&str> = std::str::from_utf8(&again).unwrap().lines().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn an_import_larger_than_the_writers_pending_limit_is_written_in_batches() {
        // The case of issue 18 (9,000 links of 8 KB against 64 MiB), scaled
        // down: 300 links of 8 KB against 1 MiB.
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("links.jsonl");
        fs::write(&input, export_lines(300, 8_000)).unwrap();
        let data = dir.path().join("data");
        let summary = import_with(&data, &input, &import_policy(None).unwrap(), 1 << 20).unwrap();
        assert_eq!(summary.imported, 300);
        // Every link is in the log.
        let keydir = Arc::new(KeyDir::new());
        let table = Arc::new(SegmentTable::new(&data, 0));
        datadir::recover(&data, &table, &keydir, 1).unwrap();
        for i in 0..300u64 {
            let url = read_url(&table, &keydir, Ident::Key(i * 7_919 + 12_345)).expect("imported");
            assert!(url.starts_with(format!("https://example.com/{i}/").as_bytes()));
        }
    }

    #[test]
    fn a_record_the_writer_can_never_take_is_not_called_busy() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("links.jsonl");
        fs::write(&input, export_lines(1, 8_000)).unwrap();
        let err = import_with(
            &dir.path().join("data"),
            &input,
            &import_policy(None).unwrap(),
            4_096,
        )
        .unwrap_err();
        assert!(!err.contains("retry"), "{err}");
        assert!(err.contains("4096"), "{err}");
    }
    use shorty_service::log::record::{encode_link, encode_marker, encode_preamble};

    fn link(key: u64) -> (u64, String) {
        (key, format!("https://e.com/{key}"))
    }

    fn put(bytes: &mut Vec<u8>, (key, url): &(u64, String)) {
        encode_link(
            &Link {
                key: *key,
                id: *key,
                url: url.as_bytes(),
                options: &[],
            },
            bytes,
        );
    }

    fn exported(dir: &Path) -> (Vec<String>, u64) {
        let mut out = Vec::new();
        let (n, damaged) = export_links(dir, &mut out).unwrap();
        let codes: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<ExportedLink>(l).unwrap().code)
            .collect();
        assert_eq!(codes.len() as u64, n);
        (codes, damaged)
    }

    fn code(key: u64) -> String {
        let mut buf = [0; MAX_CODE_LEN];
        format_code(key, &mut buf).to_owned()
    }

    #[test]
    fn export_includes_only_vouched_links() {
        // A segment being written: two acknowledged batches, each vouched
        // for by the marker that follows it, then a batch whose write
        // failed (disk full) and is still in the page cache: never
        // acknowledged, never vouched for.
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        encode_preamble(0, &mut bytes);
        put(&mut bytes, &link(1));
        put(&mut bytes, &link(2));
        encode_marker(bytes.len() as u64, &mut bytes);
        put(&mut bytes, &link(3));
        encode_marker(bytes.len() as u64, &mut bytes);
        put(&mut bytes, &link(4));
        put(&mut bytes, &link(5));
        fs::write(dir.path().join(segment_file_name(0)), &bytes).unwrap();
        let (codes, damaged) = exported(dir.path());
        assert_eq!(codes, [code(1), code(2), code(3)]);
        assert_eq!(damaged, 0);
        // Damage in vouched bytes: what precedes it, and the export fails.
        let second = PREAMBLE + shorty_service::log::record::link_len(link(1).1.len());
        let mut rotten = bytes.clone();
        rotten[second + 10] ^= 1;
        fs::write(dir.path().join(segment_file_name(0)), &rotten).unwrap();
        let (codes, damaged) = exported(dir.path());
        assert_eq!(codes, [code(1)]);
        assert_eq!(damaged, 1);
    }

    /// The README's remedy for a damaged segment exports a copy of the
    /// directory with the hint left beside the segment: the links that
    /// precede the damage are exported (review 9: none were, because the
    /// second pass found the bytes up to the damage shorter than the hint
    /// vouches for), as they are without a hint.
    #[test]
    fn a_damaged_segment_beside_its_hint_exports_what_precedes_the_damage() {
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let links: Vec<(u64, String)> = (1..=100).map(link).collect();
        let records: Vec<Keyed<'_>> = links
            .iter()
            .map(|(key, url)| Keyed::Link(Link::plain(*key, *key, url.as_bytes())))
            .collect();
        let mut bytes = encode_sealed_records(0, &[&records]);
        let hint = build_hint(0, &bytes).expect("a sealed segment has a hint");
        fs::write(dir.path().join(hint_file_name(0)), &hint).unwrap();
        // Damage inside the 41st record: 40 precede it.
        let damaged_at = PREAMBLE
            + links[..40]
                .iter()
                .map(|(_, url)| shorty_service::log::record::link_len(url.len()))
                .sum::<usize>();
        bytes[damaged_at + 12] ^= 0xff;
        fs::write(dir.path().join(segment_file_name(0)), &bytes).unwrap();
        let want: Vec<String> = (1..=40).map(code).collect();
        let (codes, damaged) = exported(dir.path());
        assert_eq!((codes, damaged), (want.clone(), 1), "with the hint");
        fs::remove_file(dir.path().join(hint_file_name(0))).unwrap();
        let (codes, damaged) = exported(dir.path());
        assert_eq!((codes, damaged), (want, 1), "without the hint");
    }

    /// The links an export of `dir` writes.
    fn exported_links(dir: &Path) -> Vec<ExportedLink> {
        let mut out = Vec::new();
        export_links(dir, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// An export line of `key` at `url` and `version` (0: none), with its
    /// newline.
    fn versioned_line(key: u64, url: &str, version: u64) -> String {
        serde_json::to_string(&ExportedLink {
            code: code(key),
            url: url.to_owned(),
            version: (version != 0).then_some(version),
            ..Default::default()
        })
        .unwrap()
            + "\n"
    }

    /// A line whose `version` no run reaches is refused as invalid: near
    /// `u64::MAX` the link could never be changed again (review 9b).
    #[test]
    fn an_import_refuses_a_version_no_run_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let line =
            |key: u64, version: u64| versioned_line(key, &format!("https://e.com/{key}"), version);
        let input = dir.path().join("in.jsonl");
        fs::write(
            &input,
            line(1, u64::MAX) + &line(2, MAX_IMPORTED_VERSION + 1) + &line(3, MAX_IMPORTED_VERSION),
        )
        .unwrap();
        let summary = import_into(&data, &input).unwrap();
        assert_eq!((summary.imported, summary.invalid), (1, 2));
    }

    /// An alias whose options do not decode is left out of an export, not
    /// written under a made-up code (review 23: two became one code).
    #[test]
    fn an_alias_whose_options_do_not_decode_is_not_exported_under_a_made_up_code() {
        let options = |status| {
            let meta = LinkMeta {
                redirect_status: Some(status),
                alias: Some("mine".into()),
                ..LinkMeta::default()
            };
            let mut bytes = Vec::new();
            meta.encode(&mut bytes);
            bytes
        };
        let (good, bad) = (options(301), options(200));
        assert!(
            LinkMeta::decode(&bad).is_err(),
            "the test needs an undecodable list"
        );
        let link = |options| Link {
            key: ALIAS_KEY,
            id: NO_ID,
            url: b"https://u.example/",
            options,
        };
        let mut out = Vec::new();
        assert!(write_link(&mut out, &link(&good)).unwrap());
        assert!(String::from_utf8_lossy(&out).contains(r#""code":"mine""#));
        let mut out = Vec::new();
        assert!(!write_link(&mut out, &link(&bad)).unwrap());
        assert!(out.is_empty());
    }

    /// A line with an option the wire and the API refuse is refused as
    /// invalid (review 23: a CR LF `expired_url` reached a 302's head, a
    /// `redirect_status` of 200 made the link unreadable, a year past 9999
    /// aborted the API's read); an expiry already past is kept.
    #[test]
    fn an_import_refuses_the_options_the_wire_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let refused = [
            r#""expired_url":"https://ok.example/\r\nSet-Cookie: a=b""#,
            r#""expired_url":"javascript:alert(1)""#,
            r#""redirect_status":200"#,
            r#""redirect_status":0"#,
            r#""max_clicks":0"#,
            r#""expires_at_ms":18446744073709551615"#,
            r#""created_at_ms":18446744073709551615"#,
        ];
        let mut lines = String::new();
        for (i, option) in refused.iter().enumerate() {
            lines += &format!(
                "{{\"code\":\"bad{i}\",\"url\":\"https://u.example/\",{option},\"alias\":true}}\n"
            );
        }
        let title = "t".repeat(shorty_service::link::MAX_TITLE_BYTES + 1);
        lines += &format!(
            "{{\"code\":\"bad-title\",\"url\":\"https://u.example/\",\"title\":\"{title}\",\"alias\":true}}\n"
        );
        // Past, but a link made before it: kept (it answers 410 or its
        // expired-URL, as it did where it was exported).
        lines += "{\"code\":\"old\",\"url\":\"https://u.example/\",\"expires_at_ms\":1000,\
                  \"expired_url\":\"https://later.example/\",\"alias\":true}\n";
        // The earliest expiry there is (review 24: refused as "in the past"
        // where 1 was kept).
        lines += "{\"code\":\"zero\",\"url\":\"https://u.example/\",\"expires_at_ms\":0,\
                  \"alias\":true}\n";
        // Credentials, which a server run with `--allow-userinfo` exports
        // (review 24: refused on the way back).
        lines += "{\"code\":\"creds\",\"url\":\"https://u:p@u.example/\",\"expires_at_ms\":1,\
                  \"expired_url\":\"https://user@later.example/\",\"alias\":true}\n";
        // A code the generator skips: its path is a route (review 24).
        let reserved = "healthz";
        assert!(parse_code(reserved.as_bytes()).is_some_and(is_reserved));
        lines += &format!("{{\"code\":\"{reserved}\",\"url\":\"https://u.example/\"}}\n");
        let input = dir.path().join("in.jsonl");
        fs::write(&input, lines).unwrap();
        let summary = import_into(&data, &input).unwrap();
        assert_eq!((summary.imported, summary.invalid), (3, 9));
    }

    /// With the server's `--public-url`, a link (or an expired-URL) under
    /// it is refused, as that server refuses it: two expired links sending
    /// visitors to each other looped (review 24).
    #[test]
    fn an_import_with_the_public_url_refuses_links_to_the_server_itself() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let lines = "\
            {\"code\":\"eeeeee1\",\"url\":\"https://ok.example/a\",\"expires_at_ms\":1,\
              \"expired_url\":\"http://127.0.0.1:48122/eeeeee2\"}\n\
            {\"code\":\"eeeeee2\",\"url\":\"http://127.0.0.1:48122/eeeeee1\"}\n\
            {\"code\":\"eeeeee3\",\"url\":\"https://ok.example/c\",\"expires_at_ms\":1,\
              \"expired_url\":\"http://127.0.0.1:48123/eeeeee2\"}\n";
        let input = dir.path().join("in.jsonl");
        fs::write(&input, lines).unwrap();
        let base = url::Url::parse("http://127.0.0.1:48122/").unwrap();
        let policy = import_policy(Some(&base)).unwrap();
        let summary = import_with(&data, &input, &policy, IMPORT_PENDING_BYTES).unwrap();
        assert_eq!((summary.imported, summary.invalid), (1, 2));
        // Without it, the server's base is unknown: all three go in.
        let summary = import_into(&dir.path().join("other"), &input).unwrap();
        assert_eq!((summary.imported, summary.invalid), (3, 0));
    }

    /// The README's restore remedy imports a later export into a restored
    /// backup: a link updated after the backup was taken comes back at its
    /// newer version (review 9: refused as "maps to another URL", so the
    /// restored link redirected to its old URL); a line at the same or an
    /// older version than the link here still changes nothing.
    #[test]
    fn an_import_applies_a_newer_version_of_a_link_here_and_refuses_an_older() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let line = versioned_line;
        let first = dir.path().join("backup.jsonl");
        fs::write(
            &first,
            line(1, "https://e.com/1", 0) + &line(2, "https://e.com/2", 3),
        )
        .unwrap();
        assert_eq!(import_into(&data, &first).unwrap().imported, 2);
        let later = dir.path().join("later.jsonl");
        fs::write(
            &later,
            line(1, "https://e.com/1-updated", 1) + &line(2, "https://e.com/2-older", 2),
        )
        .unwrap();
        let summary = import_into(&data, &later).unwrap();
        assert_eq!(
            (summary.imported, summary.updated, summary.conflicts),
            (1, 1, 1)
        );
        // Read back as a restart reads it: the newer version wins.
        let lines = exported_links(&data);
        let url_of = |key: u64| {
            lines
                .iter()
                .find(|l| l.code == code(key))
                .map(|l| (l.url.clone(), l.version))
        };
        assert_eq!(url_of(1), Some(("https://e.com/1-updated".into(), Some(1))));
        assert_eq!(url_of(2), Some(("https://e.com/2".into(), Some(3))));
        assert_eq!(lines.len(), 2);
    }

    /// A running server writes and merges while an export reads (review
    /// 4, F2): an update acknowledged between the export's two passes
    /// exported the key twice (its old URL beside the new, and an import
    /// then kept the old), and a merge that removed a segment between them
    /// lost its links. Both passes now read the same bytes.
    #[test]
    fn an_export_during_a_merge_s_last_steps_writes_each_link_once() {
        use shorty_service::log::merge::{Manifest, MANIFEST_FILE};
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let plain = |key: u64| Keyed::Link(Link::plain(key, key, b"https://e.com/x"));
        // Merge committed (manifest written, output renamed), input not yet
        // removed: links 2 and 3 in both; link 4 only in another segment.
        fs::write(
            data.join(segment_file_name(1)),
            encode_sealed_records(1, &[&[plain(2), plain(3)]]),
        )
        .unwrap();
        fs::write(
            data.join(segment_file_name(5)),
            encode_sealed_records(5, &[&[plain(2), plain(3)]]),
        )
        .unwrap();
        fs::write(
            data.join(segment_file_name(4)),
            encode_sealed_records(4, &[&[plain(4)]]),
        )
        .unwrap();
        let manifest = Manifest {
            inputs: vec![1],
            outputs: vec![5],
        };
        fs::write(data.join(MANIFEST_FILE), manifest.encode()).unwrap();
        let (mut codes, _) = exported(data);
        codes.sort();
        let want: Vec<String> = [2, 3, 4].map(code).to_vec();
        assert_eq!(codes, want, "each link once, with the input in place");
        // The input removed, the manifest not yet: the same.
        fs::remove_file(data.join(segment_file_name(1))).unwrap();
        let (mut codes, _) = exported(data);
        codes.sort();
        assert_eq!(codes, want, "each link once, the input gone");
    }

    #[test]
    fn an_export_reads_one_state_while_the_server_writes_and_merges() {
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        // Segment 0 is being written: link 1, vouched.
        let mut active = Vec::new();
        encode_preamble(0, &mut active);
        put(&mut active, &link(1));
        encode_marker(active.len() as u64, &mut active);
        fs::write(data.join(segment_file_name(0)), &active).unwrap();
        // Segment 1 is sealed: link 2.
        let sealed =
            encode_sealed_records(1, &[&[Keyed::Link(Link::plain(2, 2, b"https://e.com/2"))]]);
        fs::write(data.join(segment_file_name(1)), &sealed).unwrap();
        let mut out = Vec::new();
        let (n, damaged) = export_links_between(data, &mut out, || {
            // Link 1 updated (version 1), acknowledged: vouched.
            let mut meta = Vec::new();
            LinkMeta {
                version: 1,
                ..LinkMeta::default()
            }
            .encode(&mut meta);
            let mut more = active.clone();
            encode_link(
                &Link {
                    options: &meta,
                    ..Link::plain(1, NO_ID, b"https://e.com/1-updated")
                },
                &mut more,
            );
            encode_marker(more.len() as u64, &mut more);
            fs::write(data.join(segment_file_name(0)), &more).unwrap();
            // A merge moved segment 1's link into segment 2 and removed it.
            fs::write(
                data.join(segment_file_name(2)),
                encode_sealed_records(2, &[&[Keyed::Link(Link::plain(2, 2, b"https://e.com/2"))]]),
            )
            .unwrap();
            fs::remove_file(data.join(segment_file_name(1))).unwrap();
        })
        .unwrap();
        let lines: Vec<ExportedLink> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut got: Vec<(String, String)> = lines.into_iter().map(|l| (l.code, l.url)).collect();
        got.sort();
        let mut want = vec![
            (code(1), "https://e.com/1".to_owned()),
            (code(2), "https://e.com/2".to_owned()),
        ];
        want.sort();
        assert_eq!((got, n, damaged), (want, 2, 0));
    }

    /// An import into a directory refuses a code below the directory's id
    /// floor that its key directory does not know: the directory handed it
    /// out and deleted it, and a merge forgot the tombstone (review 5: an
    /// export taken before the delete brought the link back). A code above
    /// the floor is imported.
    #[test]
    fn an_import_never_brings_back_a_code_deleted_here() {
        use shorty_service::log::hint::HintEntry;
        use shorty_service::log::merge::{encode_forgotten, forgotten_file_name};
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let code_key = DataDir::open(&data).unwrap().load_or_create_key().unwrap();
        let codec = shorty_service::codes::Codec::new(&code_key);
        // The directory handed out ids up to 100 (ids 5, 7 and 300
        // unknown to it: 5 was deleted and a merge forgot its tombstone,
        // 7 was lost with a damaged segment, or made after the backup this
        // directory was restored from, 300 never handed out). Alias
        // `gone` was deleted at 1,000 and forgotten.
        let live = codec.key_of(100);
        let bytes = encode_sealed_records(
            0,
            &[&[Keyed::Link(Link::plain(live, 100, b"https://e.com/100"))]],
        );
        fs::write(data.join(segment_file_name(0)), bytes).unwrap();
        let tombstone = |key: u64, alias: Option<&str>| HintEntry {
            key,
            offset: shorty_service::keydir::TOMBSTONE,
            version: 2,
            deleted_at_ms: 1_000,
            alias: alias.map(Into::into),
            owner: None,
        };
        let forgotten = [
            tombstone(codec.key_of(5), None),
            tombstone(ALIAS_KEY, Some("gone")),
        ];
        fs::write(
            data.join(forgotten_file_name(3)),
            encode_forgotten(3, &forgotten),
        )
        .unwrap();
        let alias = |name: &str, url: &str, created_at_ms: u64| {
            let link = ExportedLink {
                code: name.to_owned(),
                url: url.to_owned(),
                alias: true,
                created_at_ms: Some(created_at_ms),
                ..Default::default()
            };
            serde_json::to_string(&link).unwrap()
        };
        let line = |id: u64, url: &str| {
            let link = ExportedLink {
                code: code(codec.key_of(id)),
                url: url.to_owned(),
                ..Default::default()
            };
            serde_json::to_string(&link).unwrap()
        };
        let input = dir.path().join("old.jsonl");
        fs::write(
            &input,
            [
                line(5, "https://e.com/deleted"),
                line(7, "https://e.com/lost"),
                line(300, "https://e.com/new"),
                line(100, "https://e.com/100"),
                alias("gone", "https://e.com/deleted-alias", 900),
                alias("gone", "https://e.com/claimed-again", 2_000),
            ]
            .join("\n"),
        )
        .unwrap();
        let summary = import_into(&data, &input).unwrap();
        assert_eq!(
            (summary.imported, summary.present, summary.deleted),
            (3, 1, 2),
            "{summary:?}"
        );
        let (codes, _) = exported(&data);
        assert!(!codes.contains(&code(codec.key_of(5))), "{codes:?}");
        assert!(codes.contains(&code(codec.key_of(7))), "{codes:?}");
        assert!(codes.contains(&code(codec.key_of(300))), "{codes:?}");
        assert!(
            codes.contains(&"gone".to_owned()),
            "claimed again after the delete: {codes:?}"
        );
    }

    /// A code or alias whose tombstone is still in a segment is counted
    /// as deleted, not as "maps to another URL", and stays deleted; an
    /// alias claimed again elsewhere after the delete (a later export
    /// imported into a restored backup) is imported, and its record
    /// outranks the tombstone when the directory is read again.
    #[test]
    fn an_import_over_a_tombstone_keeps_the_delete_unless_the_alias_is_newer() {
        use shorty_service::link::LinkMeta;
        use shorty_service::log::record::Tombstone;
        use shorty_service::log::segments::encode_sealed_records;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let code_key = DataDir::open(&data).unwrap().load_or_create_key().unwrap();
        let codec = shorty_service::codes::Codec::new(&code_key);
        let deleted = codec.key_of(5);
        let mut alias_meta = Vec::new();
        LinkMeta {
            alias: Some("old".into()),
            created_at_ms: Some(500),
            ..LinkMeta::default()
        }
        .encode(&mut alias_meta);
        let bytes = encode_sealed_records(
            0,
            &[&[
                Keyed::Link(Link::plain(deleted, 5, b"https://e.com/5")),
                Keyed::Link(Link {
                    options: &alias_meta,
                    ..Link::plain(ALIAS_KEY, NO_ID, b"https://e.com/old")
                }),
                Keyed::Tombstone(Tombstone {
                    key: deleted,
                    version: 1,
                    deleted_at_ms: 1_000,
                    alias: None,
                }),
                Keyed::Tombstone(Tombstone {
                    key: ALIAS_KEY,
                    version: 1,
                    deleted_at_ms: 1_000,
                    alias: Some(b"old"),
                }),
            ]],
        );
        fs::write(data.join(segment_file_name(0)), bytes).unwrap();
        let line = |code: String, url: &str, alias: bool, created_at_ms: Option<u64>| {
            serde_json::to_string(&ExportedLink {
                code,
                url: url.to_owned(),
                alias,
                created_at_ms,
                ..Default::default()
            })
            .unwrap()
        };
        let input = dir.path().join("later.jsonl");
        fs::write(
            &input,
            [
                line(code(deleted), "https://e.com/5", false, None),
                line("old".into(), "https://e.com/old", true, Some(500)),
                line(
                    "old".into(),
                    "https://e.com/claimed-again",
                    true,
                    Some(2_000),
                ),
            ]
            .join("\n"),
        )
        .unwrap();
        let summary = import_into(&data, &input).unwrap();
        assert_eq!(
            (summary.imported, summary.deleted, summary.conflicts),
            (1, 2, 0),
            "{summary:?}"
        );
        let lines = exported_links(&data);
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.code.as_str(), l.url.as_str()))
            .collect();
        assert_eq!(got, [("old", "https://e.com/claimed-again")]);
    }

    /// `verify` names a damaged segment's marker (and whether its segment
    /// is there) and the merges' `.forgotten` files with their counts; a
    /// damaged `.forgotten` file makes the directory not clean, since an
    /// import then refuses to run.
    #[test]
    fn verify_names_damage_markers_and_forgotten_deletes() {
        use shorty_service::log::hint::HintEntry;
        use shorty_service::log::merge::{encode_forgotten, forgotten_file_name};
        use shorty_service::log::segments::damaged_file_name;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let tombstone = |key: u64| HintEntry {
            key,
            offset: shorty_service::keydir::TOMBSTONE,
            version: 1,
            deleted_at_ms: 1_000,
            alias: None,
            owner: None,
        };
        fs::write(
            data.join(forgotten_file_name(4)),
            encode_forgotten(4, &[tombstone(7), tombstone(9)]),
        )
        .unwrap();
        fs::write(data.join(damaged_file_name(2)), b"").unwrap();
        fs::write(data.join(damaged_file_name(3)), b"").unwrap();
        let (lines, clean) = verify_markers(data, &[3]);
        assert!(clean, "{lines:?}");
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("is missing (moved aside?)"), "{lines:?}");
        assert!(
            lines[1].contains("a start that loads it removes"),
            "{lines:?}"
        );
        assert!(lines[2].contains(": 2 deletes a merge forgot"), "{lines:?}");
        let mut bytes = fs::read(data.join(forgotten_file_name(4))).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(data.join(forgotten_file_name(4)), bytes).unwrap();
        let (lines, clean) = verify_markers(data, &[3]);
        assert!(!clean, "{lines:?}");
        assert!(lines[2].contains("damaged"), "{lines:?}");
    }

    const PREAMBLE: usize = shorty_service::log::record::PREAMBLE_LEN;
}
