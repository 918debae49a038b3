//! Reader for the IDX format (MNIST-style), plain or gzip-compressed, with strict validation.

use std::io::Read;
use std::path::Path;

use crate::error::{ModelError, Result};

/// Largest decompressed IDX payload accepted (guards against gzip bombs and absurd headers).
pub const MAX_IDX_BYTES: usize = 1 << 30;

/// An unsigned-byte IDX array: its dimensions and its data in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of each dimension (e.g. `[n, 28, 28]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// The values, `dims.iter().product()` of them.
    pub data: Vec<u8>,
}

/// Reads an IDX file from disk; gzip is detected from its magic bytes, not the file name.
pub fn read_idx_file(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse_idx(&raw).map_err(|reason| ModelError::Idx {
        path: path.to_path_buf(),
        reason,
    })
}

/// Encodes an unsigned-byte array as plain IDX (the inverse of [`parse_idx`]).
pub fn encode_idx(array: &IdxArray) -> std::result::Result<Vec<u8>, String> {
    let n: usize = array.dims.iter().product();
    if n != array.data.len() || array.dims.is_empty() || array.dims.len() > 255 {
        return Err(format!(
            "{} values do not fill dimensions {:?}",
            array.data.len(),
            array.dims
        ));
    }
    let mut out = vec![0, 0, 0x08, array.dims.len() as u8];
    for &d in &array.dims {
        let d = u32::try_from(d).map_err(|_| format!("dimension {d} exceeds u32"))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    Ok(out)
}

/// Writes `data` as a directory `DataSource::from_dir` reads: the `t10k` IDX pair and `classes.txt`.
pub fn write_dataset_dir(dir: &Path, data: &crate::data::Dataset) -> Result<()> {
    let io = |path: &Path, error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let images = IdxArray {
        dims: vec![data.len(), data.rows, data.cols],
        data: data.images.clone(),
    };
    let labels = IdxArray {
        dims: vec![data.len()],
        data: data.labels.clone(),
    };
    for (name, array) in [
        ("t10k-images-idx3-ubyte", images),
        ("t10k-labels-idx1-ubyte", labels),
    ] {
        let path = dir.join(name);
        let bytes = encode_idx(&array).map_err(|reason| ModelError::Idx {
            path: path.clone(),
            reason,
        })?;
        std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
    }
    let path = dir.join("classes.txt");
    std::fs::write(&path, data.classes.join("\n") + "\n").map_err(|e| io(&path, e))?;
    Ok(())
}

/// Parses IDX bytes (plain or gzip); the error says what is wrong.
pub fn parse_idx(raw: &[u8]) -> std::result::Result<IdxArray, String> {
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .take(MAX_IDX_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip stream is corrupt: {e}"))?;
        if out.len() > MAX_IDX_BYTES {
            return Err(format!("decompressed size exceeds {MAX_IDX_BYTES} bytes"));
        }
        out
    } else {
        raw.to_vec()
    };
    let header = bytes.get(..4).ok_or_else(|| {
        format!(
            "file is {} bytes, too short for the magic number",
            bytes.len()
        )
    })?;
    if header[0] != 0 || header[1] != 0 {
        return Err(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x} (expected 0000 08 nn)",
            header[0], header[1], header[2], header[3]
        ));
    }
    if header[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not supported (only unsigned byte, 0x08)",
            header[2]
        ));
    }
    let ndims = header[3] as usize;
    if ndims == 0 || ndims > 4 {
        return Err(format!("{ndims} dimensions (expected 1 to 4)"));
    }
    let dims_end = 4 + 4 * ndims;
    let dim_bytes = bytes
        .get(4..dims_end)
        .ok_or_else(|| format!("header truncated: {ndims} dimensions need {dims_end} bytes"))?;
    let mut dims = Vec::with_capacity(ndims);
    let mut total: usize = 1;
    for chunk in dim_bytes.chunks_exact(4) {
        let d = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
        total = total
            .checked_mul(d)
            .filter(|t| *t <= MAX_IDX_BYTES)
            .ok_or_else(|| format!("dimensions {dims:?}x{d} are too large"))?;
        dims.push(d);
    }
    let payload = &bytes[dims_end..];
    if payload.len() != total {
        return Err(format!(
            "header declares dimensions {dims:?} = {total} values but {} bytes follow{}",
            payload.len(),
            if payload.len() < total {
                " (file truncated?)"
            } else {
                " (trailing data)"
            }
        ));
    }
    Ok(IdxArray {
        dims,
        data: payload.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_plain_and_gzip() {
        let raw = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse_idx(&raw).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let b = parse_idx(&gz.finish().unwrap()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse_idx(&[0, 0]).unwrap_err().contains("too short"));
        assert!(parse_idx(&[1, 0, 8, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("magic"));
        assert!(parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("element type"));
        assert!(parse_idx(&[0, 0, 8, 0]).unwrap_err().contains("dimensions"));
        assert!(parse_idx(&[0, 0, 8, 3, 0, 0, 0, 2])
            .unwrap_err()
            .contains("header truncated"));
        let truncated = idx(&[3], &[1, 2]);
        assert!(parse_idx(&truncated).unwrap_err().contains("truncated"));
        let trailing = idx(&[1], &[1, 2]);
        assert!(parse_idx(&trailing).unwrap_err().contains("trailing"));
        let huge = idx(&[u32::MAX, u32::MAX], &[]);
        assert!(parse_idx(&huge).unwrap_err().contains("too large"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx(&[4], &[1, 2, 3, 4])).unwrap();
        let mut bytes = gz.finish().unwrap();
        bytes.truncate(bytes.len() - 6);
        assert!(parse_idx(&bytes).is_err());
    }

    #[test]
    fn encoded_arrays_parse_back_and_a_dataset_dir_loads() {
        let a = IdxArray {
            dims: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(parse_idx(&encode_idx(&a).unwrap()).unwrap(), a);
        let bad = IdxArray {
            dims: vec![2, 2],
            data: vec![1],
        };
        assert!(encode_idx(&bad).is_err());
        let src = crate::data::DataSource::embedded().unwrap();
        let part = src.test.subset(&[0, 1, 2, 3]);
        let dir = tempfile::tempdir().unwrap();
        write_dataset_dir(dir.path(), &part).unwrap();
        let back = crate::data::DataSource::from_dir(dir.path()).unwrap();
        assert_eq!(back.test.images, part.images);
        assert_eq!(back.test.labels, part.labels);
        assert_eq!(back.test.classes, part.classes);
    }
}
