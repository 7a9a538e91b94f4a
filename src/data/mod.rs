//! TEMPORARY stand-in (replaced by the data branch).
#![allow(missing_docs)]
use ndarray::Array2;
use std::io::Read;
use std::path::{Path, PathBuf};
pub const IMAGE_PIXELS: usize = 784;
pub const NUM_CLASSES: usize = 10;
#[derive(Clone, Debug)]
pub struct Dataset { pub images: Array2<f32>, pub labels: Vec<u8> }
impl Dataset {
    pub fn len(&self) -> usize { self.labels.len() }
    pub fn is_empty(&self) -> bool { self.labels.is_empty() }
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        Dataset { images: self.images.select(ndarray::Axis(0), idx), labels: idx.iter().map(|&i| self.labels[i]).collect() }
    }
    pub fn take(&self, n: usize) -> Dataset { let idx: Vec<usize> = (0..n.min(self.len())).collect(); self.subset(&idx) }
}
#[derive(Clone, Debug)]
pub struct Mnist { pub train: Dataset, pub test: Dataset }
#[derive(Debug, thiserror::Error)]
pub enum DataError { #[error("{0}")] Other(String) }
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Partition { Iid, Dirichlet { alpha: f64 } }
impl std::str::FromStr for Partition { type Err = String; fn from_str(_s: &str) -> Result<Self, String> { Ok(Partition::Iid) } }
fn read(p: PathBuf) -> Vec<u8> { let mut v = vec![]; flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()).read_to_end(&mut v).unwrap(); v }
fn ds(dir: &Path, pre: &str) -> Dataset {
    let im = read(dir.join(format!("{pre}-images-idx3-ubyte.gz")));
    let lb = read(dir.join(format!("{pre}-labels-idx1-ubyte.gz")));
    let n = lb.len() - 8;
    Dataset { images: Array2::from_shape_vec((n, 784), im[16..].iter().map(|&b| b as f32 / 255.0).collect()).unwrap(), labels: lb[8..].to_vec() }
}
pub fn load_or_download(flag: Option<&Path>) -> Result<Mnist, DataError> {
    let dir = flag.map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var("MNIST_DIR").unwrap()));
    Ok(Mnist { train: ds(&dir, "train"), test: ds(&dir, "t10k") })
}
pub fn partition(labels: &[u8], parties: usize, _s: Partition, seed: u64) -> Result<Vec<Vec<usize>>, DataError> {
    use rand::{SeedableRng, seq::SliceRandom};
    let mut idx: Vec<usize> = (0..labels.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed));
    let per = labels.len().div_ceil(parties);
    Ok(idx.chunks(per).map(|c| c.to_vec()).collect())
}
