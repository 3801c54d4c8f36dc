//! A small ustar reader and writer, for product bundles only: regular files with relative
//! paths, nothing else. Our own rather than a crate because a bundle needs a sliver of the
//! format and must refuse most of it (links, devices, absolute and `..` paths, GNU and pax
//! extensions), which is shorter to write than to disable.
//!
//! Pure: bytes in, entries out. The caller bounds the archive's size (the request body
//! limit); the reader bounds the number of entries and checks every size against the bytes
//! actually there, so a lying header cannot make it allocate.

/// The tar block size: headers and data are padded to it.
const BLOCK: usize = 512;

/// Most entries an archive may hold (directories included). A bundle has four files.
pub const MAX_ENTRIES: usize = 64;

/// The longest `prefix` + `/` + `name` a ustar header holds.
const MAX_PATH: usize = 155 + 1 + 100;

/// Why an archive is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error("the archive is truncated: it ends inside {0}")]
    Truncated(String),
    #[error("entry {0} is not a ustar header (bad magic or checksum)")]
    NotUstar(usize),
    #[error("entry {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("entry {path:?} is a {kind}: only regular files and directories are allowed")]
    Type { path: String, kind: &'static str },
    #[error("entry {0:?}: bad size field")]
    BadSize(String),
    #[error("more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("entry {0:?} appears twice")]
    Duplicate(String),
}

/// One regular file of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated, without `.` or `..` components (a leading `./` is dropped).
    pub path: String,
    pub data: Vec<u8>,
}

/// Reads every regular file of `bytes`; directory entries are checked and skipped.
///
/// # Errors
/// [`TarError`]: truncation, a header that is not ustar, a path that is absolute or climbs
/// out (`..`), a link or any other special entry, too many entries, a path twice.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>, TarError> {
    let mut out: Vec<Entry> = Vec::new();
    let mut at = 0;
    for index in 0.. {
        // The end: two zero blocks, one, or (leniently) the end of the bytes on a boundary.
        let Some(header) = bytes.get(at..at + BLOCK) else {
            if at == bytes.len() {
                break;
            }
            return Err(TarError::Truncated(format!("header {index}")));
        };
        if header.iter().all(|b| *b == 0) {
            break;
        }
        if index >= MAX_ENTRIES {
            return Err(TarError::TooMany);
        }
        let h = Header::parse(header, index)?;
        at += BLOCK;
        let data = bytes
            .get(at..at + h.size)
            .ok_or_else(|| TarError::Truncated(format!("the data of {:?}", h.path)))?;
        at += h.size.div_ceil(BLOCK) * BLOCK;
        match h.kind {
            Kind::Directory => {}
            Kind::File => {
                if out.iter().any(|e| e.path == h.path) {
                    return Err(TarError::Duplicate(h.path));
                }
                out.push(Entry {
                    path: h.path,
                    data: data.to_vec(),
                });
            }
        }
    }
    Ok(out)
}

/// Writes `files` as a ustar archive (mode 0644, owner 0, time 0: the same files give the
/// same bytes).
///
/// # Errors
/// [`TarError::BadPath`] for a path [`read`] would refuse or that does not fit a header.
pub fn write(files: &[(&str, &[u8])]) -> Result<Vec<u8>, TarError> {
    let mut out = Vec::new();
    for (path, data) in files {
        let path = check_path(path)?;
        let mut h = [0u8; BLOCK];
        let (prefix, name) = split_path(&path)?;
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        let sum = checksum(&h);
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

/// Checks a member path and returns it without a leading `./`.
///
/// # Errors
/// [`TarError::BadPath`]: empty, absolute, a `.`, `..` or empty component, a backslash or
/// a control character, or longer than a ustar header holds.
pub fn check_path(path: &str) -> Result<String, TarError> {
    let bad = |why| TarError::BadPath {
        path: path.to_owned(),
        why,
    };
    let rel = path.strip_prefix("./").unwrap_or(path);
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    if rel.is_empty() {
        return Err(bad("empty path"));
    }
    if rel.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if rel.len() > MAX_PATH {
        return Err(bad("path too long"));
    }
    if rel.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(bad("backslash or control character in the path"));
    }
    for part in rel.split('/') {
        match part {
            ".." => return Err(bad("path climbs out of the folder (..)")),
            "" | "." => return Err(bad("empty or . component in the path")),
            _ => {}
        }
    }
    Ok(rel.to_owned())
}

/// Splits a path into the header's `prefix` (≤ 155 bytes) and `name` (≤ 100 bytes).
fn split_path(path: &str) -> Result<(&str, &str), TarError> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| prefix.len() <= 155 && name.len() <= 100 && !name.is_empty())
        .ok_or_else(|| TarError::BadPath {
            path: path.to_owned(),
            why: "path too long",
        })
}

/// The header checksum: every byte summed, the checksum field counted as spaces.
fn checksum(h: &[u8]) -> u32 {
    h.iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum()
}

enum Kind {
    File,
    Directory,
}

/// The parts of a header a bundle uses.
struct Header {
    path: String,
    size: usize,
    kind: Kind,
}

impl Header {
    fn parse(h: &[u8], index: usize) -> Result<Self, TarError> {
        // POSIX ustar (`ustar\0`) and GNU (`ustar  \0`) both carry the same fields we read.
        let ustar = &h[257..263] == b"ustar\0" || &h[257..263] == b"ustar ";
        let stored = octal(&h[148..156]);
        if !ustar || stored != Some(u64::from(checksum(h))) {
            return Err(TarError::NotUstar(index));
        }
        let text = |field: &[u8]| {
            let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
            String::from_utf8(field[..end].to_vec())
        };
        // Only POSIX ustar has a `prefix`; GNU keeps other fields there.
        let prefix = if &h[257..263] == b"ustar\0" {
            &h[345..500]
        } else {
            &h[..0]
        };
        let raw = match (text(prefix), text(&h[..100])) {
            (Ok(prefix), Ok(name)) if prefix.is_empty() => name,
            (Ok(prefix), Ok(name)) => format!("{prefix}/{name}"),
            _ => {
                return Err(TarError::BadPath {
                    path: String::from_utf8_lossy(&h[..100]).into_owned(),
                    why: "path is not UTF-8",
                });
            }
        };
        let kind = match h[156] {
            b'0' | 0 => Kind::File,
            b'5' => Kind::Directory,
            other => {
                return Err(TarError::Type {
                    path: raw,
                    kind: match other {
                        b'1' => "hard link",
                        b'2' => "symbolic link",
                        b'3' | b'4' => "device",
                        b'6' => "FIFO",
                        b'x' | b'g' => "pax extended header",
                        b'L' | b'K' => "GNU long name",
                        _ => "special entry",
                    },
                });
            }
        };
        let path = match kind {
            // `tar -C DIR -cf - .` starts with the folder itself.
            Kind::Directory if matches!(raw.as_str(), "." | "./") => String::new(),
            _ => check_path(&raw)?,
        };
        let size = octal(&h[124..136])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| TarError::BadSize(path.clone()))?;
        Ok(Header { path, size, kind })
    }
}

/// An octal field: digits, optionally padded with spaces and ended by NUL or space. `None`
/// for anything else (GNU's base-256 sizes included: no bundle file is that large).
fn octal(field: &[u8]) -> Option<u64> {
    let digits: &[u8] = {
        let s = field
            .iter()
            .position(|b| *b != b' ')
            .map_or(&field[..0], |i| &field[i..]);
        let end = s
            .iter()
            .position(|b| *b == 0 || *b == b' ')
            .unwrap_or(s.len());
        &s[..end]
    };
    if digits.is_empty() || digits.len() > 21 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| match d {
        b'0'..=b'7' => Some(n * 8 + u64::from(d - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(files: &[(&str, &[u8])]) -> Vec<Entry> {
        files
            .iter()
            .map(|(p, d)| Entry {
                path: (*p).to_owned(),
                data: d.to_vec(),
            })
            .collect()
    }

    #[test]
    fn what_is_written_reads_back() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let files: [(&str, &[u8]); 4] = [
            ("product.json", b"{}"),
            ("orquestrators/minimal/fabfile.py", &[7u8; 1000]),
            ("empty", b""),
            (&long, b"x"),
        ];
        let tar = write(&files).unwrap();
        assert_eq!(tar.len() % BLOCK, 0);
        assert_eq!(read(&tar).unwrap(), entries(&files));
    }

    /// A header made by `write`, then changed by `edit` (checksum recomputed).
    fn one(path: &str, data: &[u8], edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut tar = write(&[("x", data)]).unwrap();
        tar[..100].fill(0);
        tar[..path.len()].copy_from_slice(path.as_bytes());
        edit(&mut tar[..BLOCK]);
        let sum = checksum(&tar[..BLOCK]);
        tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar
    }

    #[test]
    fn refuses_what_a_bundle_must_not_hold() {
        let bad_path = |p: &str| {
            assert!(
                matches!(read(&one(p, b"", |_| {})), Err(TarError::BadPath { .. })),
                "{p}"
            );
        };
        for p in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "a\\b",
            ".",
        ] {
            bad_path(p);
        }
        let symlink = one("link", b"", |h| {
            h[156] = b'2';
            h[157..168].copy_from_slice(b"/etc/passwd");
        });
        assert!(matches!(
            read(&symlink),
            Err(TarError::Type {
                kind: "symbolic link",
                ..
            })
        ));
        let hardlink = one("link", b"", |h| h[156] = b'1');
        assert!(matches!(read(&hardlink), Err(TarError::Type { .. })));
        // A size the bytes do not hold is a truncation, never an allocation.
        let huge = one("big", b"", |h| {
            h[124..136].copy_from_slice(b"77777777777\0")
        });
        assert!(matches!(read(&huge), Err(TarError::Truncated(_))));
        let mut twice = write(&[("a", b"1"), ("a", b"2")]).unwrap();
        assert_eq!(read(&twice), Err(TarError::Duplicate("a".into())));
        twice[150] ^= 1;
        assert_eq!(read(&twice), Err(TarError::NotUstar(0)));
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("f{i}")).collect();
        let files: Vec<(&str, &[u8])> = many.iter().map(|p| (p.as_str(), &b""[..])).collect();
        assert_eq!(read(&write(&files).unwrap()), Err(TarError::TooMany));
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let tar = write(&[("a", &[1u8; 700][..])]).unwrap();
        assert!(matches!(read(&tar[..1000]), Err(TarError::Truncated(_))));
        assert!(matches!(read(&tar[..100]), Err(TarError::Truncated(_))));
        assert_eq!(read(&[1u8; 1024]), Err(TarError::NotUstar(0)));
        assert_eq!(read(b""), Ok(vec![]));
        // Directories are skipped; a leading ./ is dropped.
        let dir = one("./d/", b"", |h| h[156] = b'5');
        assert_eq!(read(&dir), Ok(vec![]));
        let top = one("./", b"", |h| h[156] = b'5');
        assert_eq!(read(&top), Ok(vec![]));
    }

    #[test]
    fn writing_refuses_paths_reading_would() {
        assert!(write(&[("../x", b"")]).is_err());
        assert!(write(&[(&"a".repeat(101), b"")]).is_err());
    }
}
