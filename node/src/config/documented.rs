//! The documented `config.toml` that `fedmmkt init` writes: every section and field with the
//! doc line its declaration carries (`models::knobs!`), and an example for the fields that
//! have no default value.

use super::*;

impl NodeConfig {
    /// This config as TOML with its doc comment above every field and section (what `init`
    /// writes); an error when a field has no doc comment or an unset one no example.
    pub fn to_toml_documented(&self) -> Result<String, ConfigError> {
        let value = toml::Value::try_from(self).map_err(|e| ConfigError::Render(e.to_string()))?;
        let root = value
            .as_table()
            .ok_or_else(|| ConfigError::Render("the config is not a table".into()))?;
        let mut out = String::from(
            "# fedmmkt node configuration (written by `fedmmkt init`).\n\
             # Every field is optional; a missing field takes the default shown here.\n",
        );
        render_table(&mut out, "", Self::FIELDS, root)?;
        Ok(out)
    }
}

/// An example value written (commented out) for optional fields that are unset.
pub(super) fn example_for(section: &str, field: &str) -> Option<&'static str> {
    match (section, field) {
        ("network", "psk_file") => Some("\"swarm.key\""),
        ("node", "dataset") => Some("\"/path/to/dataset\""),
        ("node", "cache_dir") => Some("\"cache\""),
        _ => None,
    }
}

/// Writes `table` (the TOML table at `path`, "" for the root) with each field's doc comment
/// above it: `fields`' values first, then each nested table under its own header.
pub(super) fn render_table(
    out: &mut String,
    path: &str,
    fields: &[Field],
    table: &toml::Table,
) -> Result<(), ConfigError> {
    let mut written = Vec::new();
    let mut tables = Vec::new();
    render_values(out, path, fields, table, &mut written, &mut tables)?;
    if let Some(extra) = table.keys().find(|k| !written.contains(&k.as_str())) {
        return Err(ConfigError::Render(format!(
            "{} has no documentation line",
            dotted(path, extra)
        )));
    }
    for (field, inner) in tables {
        let name = dotted(path, field.name);
        let sub = (table.get(field.name).and_then(toml::Value::as_table))
            .ok_or_else(|| ConfigError::Render(format!("section [{name}] missing")))?;
        out.push('\n');
        push_doc(out, field);
        out.push_str(&format!("[{name}]\n"));
        render_table(out, &name, inner, sub)?;
    }
    Ok(())
}

/// Writes the plain values of `fields` (those of flattened structs too) that `table` holds,
/// and collects the names written and the nested tables left for [`render_table`].
pub(super) fn render_values<'f>(
    out: &mut String,
    path: &str,
    fields: &'f [Field],
    table: &toml::Table,
    written: &mut Vec<&'f str>,
    tables: &mut Vec<(&'f Field, &'f [Field])>,
) -> Result<(), ConfigError> {
    for field in fields {
        match field.kind {
            FieldKind::Flatten(inner) => render_values(out, path, inner, table, written, tables)?,
            FieldKind::Table(inner) => {
                written.push(field.name);
                tables.push((field, inner));
            }
            FieldKind::Value => {
                written.push(field.name);
                push_doc(out, field);
                match (table.get(field.name), example_for(path, field.name)) {
                    (Some(toml::Value::Table(_)), _) => {
                        return Err(ConfigError::Render(format!(
                            "{} is a table: mark it #[knob(table)]",
                            dotted(path, field.name)
                        )))
                    }
                    (Some(v), _) => out.push_str(&format!("{} = {}\n", field.name, short(v))),
                    (None, Some(example)) => {
                        out.push_str(&format!("# {} = {example}\n", field.name))
                    }
                    (None, None) => {
                        return Err(ConfigError::Render(format!(
                            "{} has no value and no example",
                            dotted(path, field.name)
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}

/// `field`'s doc comment as `# ` lines.
pub(super) fn push_doc(out: &mut String, field: &Field) {
    for line in field.doc_lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str(&format!("# {line}\n"));
        }
    }
}

/// `path.name`, or `name` at the root.
pub(super) fn dotted(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// `v` as TOML, a float that is an `f32` written the way the `f32` prints (0.7, not
/// 0.699999988079071), for readable TOML that reads back to the same `f32`.
pub(super) fn short(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(x) if f64::from(*x as f32) == *x && x.is_finite() => {
            toml::Value::Float((*x as f32).to_string().parse().unwrap_or(*x)).to_string()
        }
        other => other.to_string(),
    }
}
