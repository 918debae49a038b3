//! Labelled 28×28-style image datasets: loading a directory of IDX files or the embedded default.

use std::path::{Path, PathBuf};

use crate::data::idx::{parse_idx, read_idx_file, IdxArray};
use crate::error::{ModelError, Result};

const EMBEDDED_IMAGES: &[u8] =
    include_bytes!("../../../data/fashion-mnist/t10k-images-idx3-ubyte.gz");
const EMBEDDED_LABELS: &[u8] =
    include_bytes!("../../../data/fashion-mnist/t10k-labels-idx1-ubyte.gz");
const EMBEDDED_CLASSES: &str = include_str!("../../../data/fashion-mnist/classes.txt");

/// Where Debian's `dataset-fashion-mnist` package installs the full dataset.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Most classes a dataset may declare (labels are stored as u8).
pub const MAX_CLASSES: usize = 256;

/// A set of grayscale images with integer labels and class names.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Pixels, `len() * rows * cols` bytes, image after image.
    pub images: Vec<u8>,
    /// One label per image, each `< classes.len()`.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Class names in label order.
    pub classes: Vec<String>,
}

/// The splits a data directory provides: always a test split, optionally a train split.
#[derive(Debug, Clone)]
pub struct DataSource {
    /// `train-*` files, when present.
    pub train: Option<Dataset>,
    /// `t10k-*` files.
    pub test: Dataset,
    /// Where it came from, for reports.
    pub origin: String,
}

impl Dataset {
    /// Builds a dataset from an image array and a label array, checking they agree.
    pub fn from_idx(images: IdxArray, labels: IdxArray, classes: Vec<String>) -> Result<Self> {
        let bad = |r: String| ModelError::Dataset(r);
        if images.dims.len() != 3 {
            return Err(bad(format!(
                "image file has {} dimensions, expected 3 (n, rows, cols)",
                images.dims.len()
            )));
        }
        if labels.dims.len() != 1 {
            return Err(bad(format!(
                "label file has {} dimensions, expected 1",
                labels.dims.len()
            )));
        }
        let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
        if n != labels.dims[0] {
            return Err(bad(format!("{n} images but {} labels", labels.dims[0])));
        }
        if rows == 0 || cols == 0 || rows > 256 || cols > 256 {
            return Err(bad(format!("image size {rows}x{cols} is not supported")));
        }
        if classes.is_empty() || classes.len() > MAX_CLASSES {
            return Err(bad(format!(
                "{} class names (need 1 to {MAX_CLASSES})",
                classes.len()
            )));
        }
        if let Some(&l) = labels.data.iter().find(|&&l| l as usize >= classes.len()) {
            return Err(bad(format!(
                "label {l} but only {} class names",
                classes.len()
            )));
        }
        Ok(Self {
            images: images.data,
            labels: labels.data,
            rows,
            cols,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The pixels of image `i` (`i < len()`, callers index with their own valid indices).
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }

    /// A new dataset holding the images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut images = Vec::with_capacity(indices.len() * self.pixels());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Self {
            images,
            labels,
            rows: self.rows,
            cols: self.cols,
            classes: self.classes.clone(),
        }
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes()];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// Parses `classes.txt`: one non-empty class name per line.
pub fn parse_classes(text: &str) -> Result<Vec<String>> {
    let classes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if classes.is_empty() {
        return Err(ModelError::Dataset("classes.txt lists no class".into()));
    }
    Ok(classes)
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

fn load_pair(dir: &Path, prefix: &str, classes: &[String]) -> Result<Option<Dataset>> {
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"));
    let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"));
    match (images, labels) {
        (None, None) => Ok(None),
        (Some(i), Some(l)) => {
            let ds = Dataset::from_idx(read_idx_file(&i)?, read_idx_file(&l)?, classes.to_vec())
                .map_err(|e| ModelError::Dataset(format!("{}: {e}", dir.display())))?;
            Ok(Some(ds))
        }
        (Some(_), None) | (None, Some(_)) => Err(ModelError::Dataset(format!(
            "{}: found only one of {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]",
            dir.display()
        ))),
    }
}

impl DataSource {
    /// The Fashion-MNIST test split compiled into the binary.
    pub fn embedded() -> Result<Self> {
        let idx = |bytes: &[u8]| {
            parse_idx(bytes).map_err(|reason| ModelError::Idx {
                path: PathBuf::from("<embedded>"),
                reason,
            })
        };
        let test = Dataset::from_idx(
            idx(EMBEDDED_IMAGES)?,
            idx(EMBEDDED_LABELS)?,
            parse_classes(EMBEDDED_CLASSES)?,
        )?;
        Ok(Self {
            train: None,
            test,
            origin: "embedded Fashion-MNIST t10k".into(),
        })
    }

    /// Loads a directory holding `t10k-*` IDX files, `classes.txt` and optionally `train-*`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let classes_path = dir.join("classes.txt");
        let classes_text =
            std::fs::read_to_string(&classes_path).map_err(|error| ModelError::Io {
                path: classes_path.clone(),
                error,
            })?;
        let classes = parse_classes(&classes_text)?;
        let test = load_pair(dir, "t10k", &classes)?.ok_or_else(|| {
            ModelError::Dataset(format!(
                "{}: no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz]",
                dir.display()
            ))
        })?;
        let train = load_pair(dir, "train", &classes)?;
        if let Some(tr) = &train {
            if (tr.rows, tr.cols) != (test.rows, test.cols) {
                return Err(ModelError::Dataset(format!(
                    "{}: train images are {}x{} but test images {}x{}",
                    dir.display(),
                    tr.rows,
                    tr.cols,
                    test.rows,
                    test.cols
                )));
            }
        }
        Ok(Self {
            train,
            test,
            origin: dir.display().to_string(),
        })
    }

    /// `--data DIR` when given; else Debian's full Fashion-MNIST when installed; else the embedded split.
    pub fn discover(dir: Option<&Path>) -> Result<Self> {
        match dir {
            Some(d) => Self::from_dir(d),
            None => {
                let debian = Path::new(DEBIAN_FASHION_MNIST);
                if debian.join("classes.txt").is_file()
                    || find(debian, "train-images-idx3-ubyte").is_some()
                {
                    // Debian's package ships no classes.txt; fall back to the embedded names.
                    let mut src = Self::embedded()?;
                    let classes = src.test.classes.clone();
                    if let Some(train) = load_pair(debian, "train", &classes)? {
                        src.train = Some(train);
                        src.origin = format!("{DEBIAN_FASHION_MNIST} (train) + embedded t10k");
                    }
                    Ok(src)
                } else {
                    Self::embedded()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_is_balanced_fashion_mnist() {
        let src = DataSource::embedded().unwrap();
        assert_eq!(src.test.len(), 10_000);
        assert_eq!((src.test.rows, src.test.cols), (28, 28));
        assert_eq!(src.test.classes[9], "Ankle boot");
        assert!(src.test.class_counts().iter().all(|&c| c == 1000));
    }

    #[test]
    fn directory_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataSource::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("classes.txt"), "{err}");
        std::fs::write(dir.path().join("classes.txt"), "a\nb\n").unwrap();
        let err = DataSource::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("t10k"), "{err}");
        // Images with a label out of range for two classes.
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2];
        img.extend_from_slice(&[1, 2, 3, 4]);
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), &img).unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            [0, 0, 8, 1, 0, 0, 0, 1, 5],
        )
        .unwrap();
        let err = DataSource::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("label 5"), "{err}");
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            [0, 0, 8, 1, 0, 0, 0, 1, 1],
        )
        .unwrap();
        let src = DataSource::from_dir(dir.path()).unwrap();
        assert_eq!(src.test.len(), 1);
        assert!(src.train.is_none());
        std::fs::write(dir.path().join("train-images-idx3-ubyte"), &img).unwrap();
        let err = DataSource::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("only one"), "{err}");
    }
}
