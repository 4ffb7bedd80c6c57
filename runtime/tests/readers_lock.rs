//! The readers' lock of an export that may not write the directory.
//!
//! In its own test binary: it runs `mount`, and a fork of the lib tests'
//! process would hold their data directories' locks for a moment.
//!
//! Needs root (a read-only bind mount): under `CI=true` it fails without.

use std::fs;

use shorty_runtime::merge::{lock_for_reading, readers_file, READERS_FILE};

/// An export that may not write the directory (here a read-only bind
/// mount of a live one) still takes the readers' lock, so a merge
/// leaves what it reads whole (review 8: it took none and missed
/// links); with no server and no lock file, it reads without one.
#[test]
fn an_export_without_write_access_still_takes_the_readers_lock() {
    if !is_root() {
        shorty_conformance::harness::missing_tool("root", "a read-only bind mount needs it");
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (live, view) = (dir.path().join("live"), dir.path().join("view"));
    fs::create_dir_all(&live).unwrap();
    fs::create_dir_all(&view).unwrap();
    let mount = |args: &[&str]| {
        let status = std::process::Command::new("mount").args(args).status();
        assert!(status.is_ok_and(|s| s.success()), "mount {args:?}");
    };
    let (live_s, view_s) = (live.to_str().unwrap(), view.to_str().unwrap());
    mount(&["--bind", live_s, view_s]);
    struct Unmount<'a>(&'a str);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(view_s);
    mount(&["-o", "remount,bind,ro", view_s]);
    // No server, no lock file: nothing merges, the export reads.
    assert!(lock_for_reading(&view).unwrap().is_none());
    // A server holds the directory and made the file at its start.
    let server = shorty_runtime::datadir::DataDir::open(&live).unwrap();
    drop(readers_file(&live).unwrap());
    let held = lock_for_reading(&view).unwrap().expect("a lock");
    let merge = readers_file(&live).unwrap();
    assert!(merge.try_lock().is_err(), "the merge sees the export");
    drop(held);
    assert!(merge.try_lock().is_ok());
    drop(merge);
    // Without the file, an export of a live directory refuses.
    fs::remove_file(live.join(READERS_FILE)).unwrap();
    let err = lock_for_reading(&view).unwrap_err();
    assert!(err.to_string().contains("a server runs"), "{err}");
    drop(server);
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}
