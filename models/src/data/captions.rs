//! Captions for labelled images, from templates over class names.

/// Caption templates; `{}` is replaced by the class name.
pub const TEMPLATES: &[&str] = &[
    "a photo of a {}",
    "a {}",
    "a black and white picture of a {}",
    "a low resolution photo of a {}",
    "a grayscale image of a {}",
    "a product photo of a {}",
];

/// Turns a class name from `classes.txt` into words ("T-shirt/top" → "t-shirt or top").
pub fn class_phrase(name: &str) -> String {
    name.trim().to_lowercase().replace('/', " or ")
}

/// The caption for `class_name` under template `template % TEMPLATES.len()`.
pub fn caption(class_name: &str, template: usize) -> String {
    TEMPLATES[template % TEMPLATES.len()].replace("{}", &class_phrase(class_name))
}

/// One caption per label, each with a template drawn from `rng` (captions for labelled images).
pub fn random_captions<R: rand::Rng>(
    classes: &[String],
    labels: &[u8],
    rng: &mut R,
) -> Vec<String> {
    labels
        .iter()
        .map(|&l| {
            let name = classes.get(l as usize).map_or("object", String::as_str);
            caption(name, rng.random_range(0..TEMPLATES.len()))
        })
        .collect()
}

/// Every caption of every class, as `(class, template, text)`.
pub fn all_captions(classes: &[String]) -> Vec<(usize, usize, String)> {
    classes
        .iter()
        .enumerate()
        .flat_map(|(c, name)| (0..TEMPLATES.len()).map(move |t| (c, t, caption(name, t))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_name_the_class() {
        assert_eq!(caption("T-shirt/top", 0), "a photo of a t-shirt or top");
        assert_eq!(caption("Bag", TEMPLATES.len() + 1), "a bag");
        assert_eq!(
            all_captions(&["A".into(), "B".into()]).len(),
            2 * TEMPLATES.len()
        );
    }
}
