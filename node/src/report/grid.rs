//! PNG grids of generated images: one row per class.

use std::path::Path;

/// Writes `labels.len()` images (`side`×`side` u8 each) as a grid with one row per class,
/// magnified `scale` times.
pub fn write_grid(
    path: &Path,
    pixels: &[u8],
    labels: &[u8],
    classes: usize,
    side: usize,
    scale: usize,
) -> anyhow::Result<()> {
    std::fs::write(path, encode_grid(pixels, labels, classes, side, scale)?)?;
    Ok(())
}

/// [`write_grid`]'s PNG, in memory.
pub fn encode_grid(
    pixels: &[u8],
    labels: &[u8],
    classes: usize,
    side: usize,
    scale: usize,
) -> anyhow::Result<Vec<u8>> {
    let n = labels.len();
    anyhow::ensure!(
        pixels.len() == n * side * side,
        "grid: {} bytes for {n} images",
        pixels.len()
    );
    let per_row = (0..classes)
        .map(|c| labels.iter().filter(|&&l| l as usize == c).count())
        .max()
        .unwrap_or(0)
        .max(1);
    let gap = 2;
    let cell = side * scale + gap;
    let (w, h) = (per_row * cell + gap, classes.max(1) * cell + gap);
    let mut img = vec![64u8; w * h];
    let mut col = vec![0usize; classes];
    for (i, &l) in labels.iter().enumerate() {
        let c = l as usize;
        if c >= classes {
            continue;
        }
        let (x0, y0) = (gap + col[c] * cell, gap + c * cell);
        col[c] += 1;
        for y in 0..side * scale {
            for x in 0..side * scale {
                img[(y0 + y) * w + x0 + x] =
                    pixels[i * side * side + (y / scale) * side + x / scale];
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&img)?;
    Ok(out)
}
