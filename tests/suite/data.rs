//! Integration tests of `hefl::data`: IDX reading on generated fixtures, the download
//! path against a local HTTP server, partition properties, and real MNIST when
//! `MNIST_DIR` points at it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::{Compression, write::GzEncoder};
use hefl::data::{
    DataError, IMAGE_PIXELS, MNIST_SHA256, NUM_CLASSES, Partition, download_mnist_with,
    load_mnist_dir, load_or_download_with, partition, read_idx_images,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- fixtures

const NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for v in [count, rows, cols] {
        bytes.extend(v.to_be_bytes());
    }
    let pixels = count as usize * rows as usize * cols as usize;
    bytes.extend((0..pixels).map(|i| (i % 256) as u8));
    bytes
}

fn idx_labels(count: u32) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 1];
    bytes.extend(count.to_be_bytes());
    bytes.extend((0..count).map(|i| (i % 10) as u8));
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).expect("in-memory write");
    enc.finish().expect("in-memory gzip")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Decompressed content of the four files of a small MNIST: 5 training, 3 test images.
fn small_mnist() -> [Vec<u8>; 4] {
    [
        idx_images(5, 28, 28),
        idx_labels(5),
        idx_images(3, 28, 28),
        idx_labels(3),
    ]
}

/// The dotted spelling some mirrors use: `train-images.idx3-ubyte`.
fn dotted(name: &str) -> String {
    name.replacen("-idx", ".idx", 1)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fixture");
    path
}

fn write_small_mnist(dir: &Path, gz: bool, dotted_names: bool) {
    for (name, content) in NAMES.iter().zip(small_mnist()) {
        let mut file = if dotted_names {
            dotted(name)
        } else {
            name.to_string()
        };
        let bytes = if gz {
            file.push_str(".gz");
            gzip(&content)
        } else {
            content
        };
        write(dir, &file, &bytes);
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

// ---------------------------------------------------------------- IDX reading

#[test]
fn loads_raw_and_gzip_under_both_names() {
    for gz in [false, true] {
        for dotted_names in [false, true] {
            let dir = tempdir();
            write_small_mnist(dir.path(), gz, dotted_names);
            let mnist = load_mnist_dir(dir.path()).expect("valid fixtures load");
            assert_eq!(mnist.train.images.dim(), (5, IMAGE_PIXELS));
            assert_eq!(mnist.test.images.dim(), (3, IMAGE_PIXELS));
            assert_eq!(mnist.train.labels, vec![0, 1, 2, 3, 4]);
            assert_eq!(mnist.test.labels, vec![0, 1, 2]);
            // Pixel i of the file is i % 256; check scaling and row-major order.
            assert_eq!(mnist.train.images[[0, 0]], 0.0);
            assert_eq!(mnist.train.images[[0, 255]], 1.0);
            assert_eq!(mnist.train.images[[1, 0]], (784 % 256) as f32 / 255.0);
            assert!(mnist.train.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
        }
    }
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempdir();
    let [train_images, train_labels, test_images, test_labels] = small_mnist();
    // Gzip data without .gz, raw data with .gz.
    write(dir.path(), NAMES[0], &gzip(&train_images));
    write(dir.path(), "train-labels-idx1-ubyte.gz", &train_labels);
    write(dir.path(), NAMES[2], &test_images);
    write(dir.path(), "t10k-labels.idx1-ubyte.gz", &gzip(&test_labels));
    let mnist = load_mnist_dir(dir.path()).expect("loads whatever the names say");
    assert_eq!((mnist.train.len(), mnist.test.len()), (5, 3));
}

/// Writes `bytes` as the training images beside valid other files; returns the error
/// and its message, which must name the file.
fn load_with_bad_train_images(bytes: &[u8]) -> (DataError, String) {
    let dir = tempdir();
    write_small_mnist(dir.path(), false, false);
    write(dir.path(), NAMES[0], bytes);
    let err = load_mnist_dir(dir.path()).expect_err("bad file must be refused");
    let msg = err.to_string();
    assert!(msg.contains(NAMES[0]), "message names the file: {msg}");
    (err, msg)
}

#[test]
fn truncated_images_are_refused() {
    let mut bytes = idx_images(5, 28, 28);
    bytes.truncate(bytes.len() - 100);
    let (err, msg) = load_with_bad_train_images(&bytes);
    assert!(
        matches!(
            err,
            DataError::Length {
                count: 5,
                expected: 3920,
                found: 3820,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("truncated"), "{msg}");

    // Also when truncated inside a gzip stream.
    let gz = gzip(&idx_images(5, 28, 28));
    let (err, _) = load_with_bad_train_images(&gz[..gz.len() / 2]);
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
}

#[test]
fn truncated_header_is_refused() {
    let (err, msg) = load_with_bad_train_images(&idx_images(5, 28, 28)[..10]);
    assert!(
        matches!(
            err,
            DataError::ShortHeader {
                expected: 16,
                found: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("expected 16 bytes, found 10"), "{msg}");
}

#[test]
fn header_count_larger_than_data_is_refused() {
    let mut bytes = idx_images(5, 28, 28);
    bytes[4..8].copy_from_slice(&4_000_000_000u32.to_be_bytes());
    let (err, _) = load_with_bad_train_images(&bytes);
    assert!(
        matches!(
            err,
            DataError::Length {
                count: 4_000_000_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_magic_is_refused() {
    // A label file where the images should be.
    let (err, msg) = load_with_bad_train_images(&idx_labels(5));
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                expected: 0x803,
                found: 0x801,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("expected 0x00000803") && msg.contains("found 0x00000801"),
        "{msg}"
    );
    // Random bytes.
    let (err, _) = load_with_bad_train_images(b"hello, world");
    assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
    // Empty file.
    let (err, _) = load_with_bad_train_images(b"");
    assert!(
        matches!(err, DataError::BadMagic { found: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn wrong_dimensions_are_refused() {
    let (err, msg) = load_with_bad_train_images(&idx_images(5, 28, 27));
    assert!(
        matches!(
            err,
            DataError::BadDimensions {
                found: (28, 27),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("expected 28x28, found 28x27"), "{msg}");
}

#[test]
fn label_count_mismatch_is_refused() {
    let dir = tempdir();
    write_small_mnist(dir.path(), true, false);
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gzip(&idx_labels(4)),
    );
    let err = load_mnist_dir(dir.path()).expect_err("3 images, 4 labels");
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte.gz") && msg.contains("t10k-images-idx3-ubyte.gz"));
}

#[test]
fn out_of_range_label_is_refused() {
    let dir = tempdir();
    write_small_mnist(dir.path(), false, false);
    let mut labels = idx_labels(5);
    labels[8 + 3] = 10;
    write(dir.path(), NAMES[1], &labels);
    let err = load_mnist_dir(dir.path()).expect_err("label 10");
    assert!(
        matches!(
            err,
            DataError::BadLabel {
                index: 3,
                value: 10,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn missing_file_lists_accepted_names() {
    let dir = tempdir();
    write_small_mnist(dir.path(), false, false);
    std::fs::remove_file(dir.path().join(NAMES[3])).expect("remove fixture");
    let err = load_mnist_dir(dir.path()).expect_err("a file is missing");
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("t10k-labels.idx1-ubyte.gz"), "{msg}");
    // A directory that does not exist at all.
    let err = load_mnist_dir(&dir.path().join("nope")).expect_err("no directory");
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
}

#[test]
fn single_file_reader_works() {
    let dir = tempdir();
    let path = write(dir.path(), "x.gz", &gzip(&idx_images(2, 28, 28)));
    let images = read_idx_images(&path).expect("valid file");
    assert_eq!(images.dim(), (2, IMAGE_PIXELS));
}

// ---------------------------------------------------------------- download

/// A tiny HTTP/1.1 server on 127.0.0.1 serving `routes` (path -> body; anything else
/// is a 404). It answers at most `max_requests` requests, each on its own connection,
/// and stops after that or after 20 seconds, whichever comes first. Joining returns the
/// paths requested.
struct TestServer {
    base_url: String,
    handle: JoinHandle<Vec<String>>,
}

impl TestServer {
    fn start(routes: Routes, max_requests: usize) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base_url = format!(
            "http://{}/mnist/",
            listener.local_addr().expect("bound address")
        );
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut requested = Vec::new();
            while requested.len() < max_requests && Instant::now() < deadline {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let (status, body) = match routes.get(&path) {
                    Some(body) => ("200 OK", body.as_slice()),
                    None => ("404 Not Found", b"not found".as_slice()),
                };
                let header = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(header.as_bytes());
                let _ = stream.write_all(body);
                requested.push(path);
            }
            requested
        });
        TestServer { base_url, handle }
    }

    fn requested(self) -> Vec<String> {
        self.handle.join().expect("server thread")
    }
}

/// Server routes: URL path -> response body.
type Routes = HashMap<String, Vec<u8>>;
/// Expected checksums: canonical file name -> SHA-256 hex.
type Sums = Vec<(&'static str, String)>;

/// Routes serving the small MNIST gzipped, and the checksums of its content.
fn small_mnist_routes() -> (Routes, Sums) {
    let contents = small_mnist();
    let routes = NAMES
        .iter()
        .zip(&contents)
        .map(|(name, content)| (format!("/mnist/{name}.gz"), gzip(content)))
        .collect();
    let sums = NAMES
        .iter()
        .zip(&contents)
        .map(|(name, content)| (*name, sha256_hex(content)))
        .collect();
    (routes, sums)
}

fn as_refs<'a>(sums: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    sums.iter().map(|(n, s)| (*n, s.as_str())).collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn download_verifies_saves_and_loads() {
    let (routes, sums) = small_mnist_routes();
    let server = TestServer::start(routes, 4);
    let dir = tempdir();
    let target = dir.path().join("cache/mnist");
    download_mnist_with(&target, &server.base_url, &as_refs(&sums)).expect("download");
    assert_eq!(server.requested().len(), 4);
    let mut expected: Vec<String> = NAMES.iter().map(|n| format!("{n}.gz")).collect();
    expected.sort();
    assert_eq!(
        dir_entries(&target),
        expected,
        "exactly the four files, no temp files"
    );
    let mnist = load_mnist_dir(&target).expect("downloaded files load");
    assert_eq!((mnist.train.len(), mnist.test.len()), (5, 3));

    // Everything present and verified: no request is made (nothing listens there).
    download_mnist_with(&target, "http://127.0.0.1:1/", &as_refs(&sums))
        .expect("present files are verified, not downloaded");
}

#[test]
fn load_or_download_fetches_only_what_is_missing() {
    let (routes, sums) = small_mnist_routes();
    let dir = tempdir();
    write(dir.path(), NAMES[0], &small_mnist()[0]);
    let server = TestServer::start(routes, 3);
    let mnist = load_or_download_with(dir.path(), &server.base_url, &as_refs(&sums))
        .expect("download the three missing files, then load");
    assert_eq!(mnist.train.len(), 5);
    let mut requested = server.requested();
    requested.sort();
    assert_eq!(
        requested,
        vec![
            "/mnist/t10k-images-idx3-ubyte.gz",
            "/mnist/t10k-labels-idx1-ubyte.gz",
            "/mnist/train-labels-idx1-ubyte.gz",
        ]
    );
}

#[test]
fn bad_checksum_is_refused_and_not_saved() {
    let (routes, mut sums) = small_mnist_routes();
    sums[2].1 = "00".repeat(32);
    let server = TestServer::start(routes, 3);
    let dir = tempdir();
    let err = download_mnist_with(dir.path(), &server.base_url, &as_refs(&sums))
        .expect_err("t10k-images has the wrong checksum");
    server.requested();
    assert!(matches!(err, DataError::Checksum { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains(&"00".repeat(32)),
        "{msg}"
    );
    assert_eq!(
        dir_entries(dir.path()),
        vec!["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
        "the refused file and no temp file are left"
    );
}

#[test]
fn existing_file_with_bad_checksum_is_reported_and_left_alone() {
    let (_, sums) = small_mnist_routes();
    let dir = tempdir();
    let path = write(dir.path(), "train-labels.idx1-ubyte", &idx_labels(6));
    let err = download_mnist_with(dir.path(), "http://127.0.0.1:1/", &as_refs(&sums[1..2]))
        .expect_err("present file does not match");
    assert!(matches!(err, DataError::ExistingChecksum { .. }), "{err:?}");
    assert!(err.to_string().contains("remove the file"), "{err}");
    assert_eq!(std::fs::read(&path).expect("still there"), idx_labels(6));
}

#[test]
fn not_found_gives_a_clear_error() {
    let (mut routes, sums) = small_mnist_routes();
    routes.remove("/mnist/train-labels-idx1-ubyte.gz");
    let server = TestServer::start(routes, 2);
    let dir = tempdir();
    let err = download_mnist_with(dir.path(), &server.base_url, &as_refs(&sums))
        .expect_err("404 on train-labels");
    server.requested();
    assert!(
        matches!(err, DataError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("train-labels-idx1-ubyte.gz") && msg.contains("404"),
        "{msg}"
    );
    assert_eq!(dir_entries(dir.path()), vec!["train-images-idx3-ubyte.gz"]);
}

#[test]
fn uncompressed_response_is_saved_raw() {
    let content = idx_labels(5);
    let routes = HashMap::from([(
        "/mnist/train-labels-idx1-ubyte.gz".to_string(),
        content.clone(),
    )]);
    let server = TestServer::start(routes, 1);
    let dir = tempdir();
    let sum = sha256_hex(&content);
    // Base URL without the trailing slash works too.
    let base = server.base_url.trim_end_matches('/').to_string();
    download_mnist_with(dir.path(), &base, &[("train-labels-idx1-ubyte", &sum)])
        .expect("raw content verifies");
    server.requested();
    assert_eq!(dir_entries(dir.path()), vec!["train-labels-idx1-ubyte"]);
}

#[test]
fn unreachable_server_gives_an_error() {
    let dir = tempdir();
    // Bind then drop, so the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind loopback")
        .port();
    let err = download_mnist_with(
        dir.path(),
        &format!("http://127.0.0.1:{port}/"),
        &MNIST_SHA256[..1],
    )
    .expect_err("connection refused");
    assert!(matches!(err, DataError::Http { .. }), "{err:?}");
    assert!(dir_entries(dir.path()).is_empty());
}

// ---------------------------------------------------------------- partition

fn assert_exact_cover(parts: &[Vec<usize>], n: usize) {
    let mut seen = vec![false; n];
    for &i in parts.iter().flatten() {
        assert!(i < n && !seen[i], "index {i} out of range or repeated");
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s), "every index assigned");
}

fn scheme() -> impl Strategy<Value = Partition> {
    prop_oneof![
        Just(Partition::Iid),
        (0.01f64..100.0).prop_map(|alpha| Partition::Dirichlet { alpha }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn partition_is_an_exact_deterministic_cover(
        labels in prop::collection::vec(0u8..10, 1..400),
        parties in 1usize..12,
        scheme in scheme(),
        seed in any::<u64>(),
    ) {
        prop_assume!(parties <= labels.len());
        let parts = partition(&labels, parties, scheme, seed).expect("valid arguments");
        prop_assert_eq!(parts.len(), parties);
        assert_exact_cover(&parts, labels.len());
        prop_assert!(parts.iter().all(|p| !p.is_empty()), "every party gets an example");
        prop_assert_eq!(&parts, &partition(&labels, parties, scheme, seed).expect("valid"));
        if scheme == Partition::Iid {
            let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            prop_assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "{:?}", sizes);
        }
    }
}

fn mnist_like_labels(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % NUM_CLASSES) as u8).collect()
}

#[test]
fn different_seeds_give_different_partitions() {
    let labels = mnist_like_labels(1000);
    for scheme in [Partition::Iid, Partition::Dirichlet { alpha: 0.5 }] {
        let a = partition(&labels, 4, scheme, 1).expect("valid");
        let b = partition(&labels, 4, scheme, 2).expect("valid");
        assert_ne!(a, b, "{scheme}");
    }
}

/// Mean over parties of the fraction of a party's examples in its most common class.
fn mean_dominant_class_share(labels: &[u8], parts: &[Vec<usize>]) -> f64 {
    let shares = parts.iter().map(|part| {
        let mut counts = [0usize; NUM_CLASSES];
        for &i in part {
            counts[usize::from(labels[i])] += 1;
        }
        counts.iter().max().copied().unwrap_or(0) as f64 / part.len() as f64
    });
    shares.sum::<f64>() / parts.len() as f64
}

#[test]
fn small_alpha_dirichlet_is_skewed_large_alpha_is_not() {
    let labels = mnist_like_labels(10_000);
    let skewed = partition(&labels, 10, Partition::Dirichlet { alpha: 0.1 }, 3).expect("valid");
    let flat = partition(&labels, 10, Partition::Dirichlet { alpha: 1000.0 }, 3).expect("valid");
    let iid = partition(&labels, 10, Partition::Iid, 3).expect("valid");
    let (s, f, i) = (
        mean_dominant_class_share(&labels, &skewed),
        mean_dominant_class_share(&labels, &flat),
        mean_dominant_class_share(&labels, &iid),
    );
    assert!(s > 0.5, "alpha 0.1: dominant class share {s}");
    assert!(f < 0.15 && i < 0.15, "alpha 1000: {f}, iid: {i}");
}

#[test]
fn partition_argument_errors() {
    let labels = mnist_like_labels(5);
    assert!(matches!(
        partition(&labels, 0, Partition::Iid, 0),
        Err(DataError::NoParties)
    ));
    assert!(matches!(
        partition(&labels, 6, Partition::Iid, 0),
        Err(DataError::TooManyParties {
            parties: 6,
            samples: 5
        })
    ));
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            partition(&labels, 2, Partition::Dirichlet { alpha }, 0),
            Err(DataError::BadAlpha { .. })
        ));
    }
    let err = "dirichlet:abc"
        .parse::<Partition>()
        .expect_err("not a number");
    assert!(err.to_string().contains("'abc' is not a number"), "{err}");
}

// ---------------------------------------------------------------- real MNIST

#[test]
fn real_mnist_loads_when_available() {
    let Some(dir) = std::env::var_os("MNIST_DIR").map(PathBuf::from) else {
        eprintln!("skipped: MNIST_DIR is not set (e.g. MNIST_DIR=../shared/mnist)");
        return;
    };
    if !dir.is_dir() {
        eprintln!("skipped: MNIST_DIR={} is not a directory", dir.display());
        return;
    }
    let start = Instant::now();
    let mnist = load_mnist_dir(&dir).expect("real MNIST loads");
    let elapsed = start.elapsed();
    eprintln!("loaded MNIST from {} in {elapsed:?}", dir.display());
    assert_eq!(mnist.train.images.dim(), (60_000, IMAGE_PIXELS));
    assert_eq!(mnist.test.images.dim(), (10_000, IMAGE_PIXELS));
    assert_eq!(
        (mnist.train.labels.len(), mnist.test.labels.len()),
        (60_000, 10_000)
    );
    for data in [&mnist.train, &mnist.test] {
        assert!(data.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
        assert!(data.images.iter().any(|&p| p == 1.0));
        assert!(data.labels.iter().all(|&l| usize::from(l) < NUM_CLASSES));
    }
    // Known first labels of the training set.
    assert_eq!(mnist.train.labels[..5], [5, 0, 4, 1, 9]);
    // The published checksums match these files (present files are verified, not
    // downloaded; nothing listens at that address).
    download_mnist_with(&dir, "http://127.0.0.1:1/", &MNIST_SHA256)
        .expect("real MNIST matches the published SHA-256");
}
