//! Loading: from a file or text to a validated [`Config`], through the four steps of
//! the `config` module docs (interpolation, the positioned tree, serde, validation),
//! with every error placed at the line and column the user wrote.

use super::secret::{redact, secrets};
use super::{source, validate, vars, Config, ConfigError};
use std::path::Path;

/// Read, parse and validate `path`: what `redsplit check FILE` runs. On success the
/// file is exactly what `redsplit run` would accept; on failure the error reads
/// `FILE:LINE:COL: what is wrong and how to fix it`.
pub fn check(path: &Path) -> Result<Config, ConfigError> {
    Config::load(path)
}

/// Look a variable up in the process environment, as interpolation does by default.
/// A variable whose value is not valid UTF-8 counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Parse and validate YAML text, interpolating from the process environment.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_env(text, None, &process_env)
    }

    /// Parse and validate YAML text, looking `${VAR}` up with `env` instead of the
    /// process environment (tests, or a caller with its own variables). `file` names
    /// the text in errors.
    pub fn from_yaml_env(
        text: &str,
        file: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        parse(text, env).map_err(|mut e| {
            e.file = file.map(str::to_string);
            e
        })
    }

    /// Read, parse and validate a file, interpolating from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(name.clone()),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::from_yaml_env(&text, Some(&name), &process_env)
    }
}

/// The loading pipeline (the four steps of the `config` module docs); errors carry
/// positions in `text`.
fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let src_lines = source::LineIndex::new(text);
    let located = |pos: Option<source::Pos>, message: String| ConfigError {
        file: None,
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        message,
    };
    let expanded = vars::interpolate(text, env)
        .map_err(|e| located(Some(src_lines.pos(e.offset)), e.message))?;
    let out_lines = source::LineIndex::new(&expanded.text);
    // A position in the expanded text, moved back to the text the user wrote.
    let place = |p: source::Pos| src_lines.pos(expanded.source_offset(out_lines.offset(p)));
    let parsed = source::SourceMap::parse(&expanded.text);
    let tree = parsed.as_ref().ok();
    let secrets = secrets(tree, &expanded);
    let fail = |pos: Option<source::Pos>, message: String| {
        located(pos.map(place), redact(message, &secrets))
    };

    if let Some(t) = tree {
        if let Some(dup) = t.duplicates.first() {
            let first = place(dup.first);
            let where_ = validate::describe_path(&dup.parent);
            return Err(fail(
                Some(dup.again),
                format!(
                    "duplicate key `{}` in {where_} (first given at line {}): keep one of them",
                    dup.key, first.line
                ),
            ));
        }
        if let Some(at) = t.second_document {
            return Err(fail(
                Some(at),
                "a second YAML document starts here: a configuration is one document; remove the `---` and what follows, or merge the two".into(),
            ));
        }
    }
    let cfg: Config = serde_yaml::from_str(&expanded.text).map_err(|e| match &parsed {
        // Not well-formed YAML: the parser's own error is the one to show; serde_yaml
        // may first stumble on a type mismatch the broken syntax makes.
        Err(syntax) => fail(
            Some(syntax.pos),
            format!(
                "YAML syntax error: {}; check the indentation (spaces, not tabs), quotes and brackets",
                syntax.message
            ),
        ),
        Ok(_) => {
            let pos = e.location().map(|l| source::Pos { line: l.line(), column: l.column() });
            fail(pos, validate::friendly_serde_error(&e.to_string(), pos, &place))
        }
    })?;
    let mut problems: Vec<(Option<source::Pos>, usize, String)> = validate::problems(&cfg)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let pos = tree.and_then(|t| {
                t.find(&p.path)
                    .or_else(|| p.also.as_deref().and_then(|a| t.find(a)))
                    .or_else(|| t.locate(&p.path))
            });
            (pos, i, p.message)
        })
        .collect();
    // Report the problem nearest the top of the file; unplaced ones come last.
    problems.sort_by_key(|(pos, i, _)| (pos.is_none(), pos.map(|p| (p.line, p.column)), *i));
    match problems.into_iter().next() {
        Some((pos, _, message)) => Err(fail(pos, message)),
        None => Ok(cfg),
    }
}
