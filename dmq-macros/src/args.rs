//! The arguments of `#[task(...)]`: `name`, `queue`, `max_retries`, `timeout` and
//! `ignore_result`.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, Ident, Lit, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(queue);
    syn::custom_keyword!(max_retries);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(ignore_result);
}

/// The keys `#[task]` accepts, as its error messages list them.
const KEYS: &str = "name, queue, max_retries, timeout, ignore_result";

/// What `#[task(...)]` said; `None` for a key it left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskArgs {
    /// The registered name; the function's name when `None`.
    pub(crate) name: Option<String>,
    /// The default queue; `"default"` when `None`.
    pub(crate) queue: Option<String>,
    /// The retry limit; the manager's default when `None`.
    pub(crate) max_retries: Option<u32>,
    /// The limit on one run; none when `None`.
    pub(crate) timeout: Option<Duration>,
    /// Whether workers skip storing the task's result.
    pub(crate) ignore_result: bool,
}

/// Which key a `key = value` pair set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Name,
    Queue,
    MaxRetries,
    Timeout,
    IgnoreResult,
}

impl Key {
    /// Parses the key, or explains that there is no such key.
    fn parse(input: ParseStream<'_>) -> syn::Result<(Key, Span)> {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::name) {
            Ok((Key::Name, input.parse::<kw::name>()?.span))
        } else if lookahead.peek(kw::queue) {
            Ok((Key::Queue, input.parse::<kw::queue>()?.span))
        } else if lookahead.peek(kw::max_retries) {
            Ok((Key::MaxRetries, input.parse::<kw::max_retries>()?.span))
        } else if lookahead.peek(kw::timeout) {
            Ok((Key::Timeout, input.parse::<kw::timeout>()?.span))
        } else if lookahead.peek(kw::ignore_result) {
            Ok((Key::IgnoreResult, input.parse::<kw::ignore_result>()?.span))
        } else if input.peek(Ident::peek_any) {
            let unknown = input.call(Ident::parse_any)?;
            Err(syn::Error::new(
                unknown.span(),
                format!("unknown #[task] key `{unknown}`; expected one of: {KEYS}"),
            ))
        } else {
            Err(syn::Error::new(input.span(), format!("expected a #[task] key, one of: {KEYS}")))
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Key::Name => "name",
            Key::Queue => "queue",
            Key::MaxRetries => "max_retries",
            Key::Timeout => "timeout",
            Key::IgnoreResult => "ignore_result",
        }
    }
}

impl Parse for TaskArgs {
    /// Parses `key = value, ...`, reporting every bad key or value rather than the
    /// first one only. A token that breaks the `key = value` shape itself stops the
    /// parse.
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = TaskArgs::default();
        let mut seen: Vec<Key> = Vec::new();
        let mut errors: Option<syn::Error> = None;
        let mut report = |error: syn::Error| match &mut errors {
            Some(all) => all.combine(error),
            None => errors = Some(error),
        };

        while !input.is_empty() {
            let key = Key::parse(input);
            // `ignore_result` alone is a flag: `ignore_result = true` spelled short.
            let value: Option<Expr> = if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                Some(input.parse()?)
            } else {
                None
            };
            match key {
                Err(unknown) => report(unknown),
                Ok((key, span)) if seen.contains(&key) => report(syn::Error::new(
                    span,
                    format!("duplicate #[task] key `{}`", key.as_str()),
                )),
                Ok((key, span)) => {
                    seen.push(key);
                    if let Err(error) = args.set(key, value.as_ref(), span) {
                        report(error);
                    }
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }

        match errors {
            Some(errors) => Err(errors),
            None => Ok(args),
        }
    }
}

impl TaskArgs {
    /// Sets `key` from `value`, or says why the value does not fit the key.
    fn set(&mut self, key: Key, value: Option<&Expr>, span: Span) -> syn::Result<()> {
        let Some(value) = value else {
            if key == Key::IgnoreResult {
                self.ignore_result = true;
                return Ok(());
            }
            let key = key.as_str();
            return Err(syn::Error::new(span, format!("`{key}` needs a value: `{key} = ...`")));
        };
        match key {
            Key::Name => self.name = Some(non_empty_string(key, value)?),
            Key::Queue => self.queue = Some(non_empty_string(key, value)?),
            Key::MaxRetries => self.max_retries = Some(retries(value)?),
            Key::Timeout => self.timeout = Some(timeout(value)?),
            Key::IgnoreResult => match literal(value) {
                Some(Lit::Bool(flag)) => self.ignore_result = flag.value,
                _ => {
                    return Err(syn::Error::new_spanned(
                        value,
                        "`ignore_result` takes `true` or `false`, or stands alone: `#[task(ignore_result)]`",
                    ));
                }
            },
        }
        Ok(())
    }
}

fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(ExprLit { lit, attrs }) if attrs.is_empty() => Some(lit),
        _ => None,
    }
}

fn non_empty_string(key: Key, value: &Expr) -> syn::Result<String> {
    let key = key.as_str();
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` takes a string literal, as in `{key} = \"emails\"`"),
        ));
    };
    let text = lit.value();
    if text.trim().is_empty() {
        return Err(syn::Error::new(lit.span(), format!("a task's `{key}` cannot be empty")));
    }
    Ok(text)
}

fn retries(value: &Expr) -> syn::Result<u32> {
    let Some(Lit::Int(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`max_retries` takes an integer literal, as in `max_retries = 5`",
        ));
    };
    lit.base10_parse::<u32>().map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!("`max_retries` must fit in a u32 (0 to {}): {e}", u32::MAX),
        )
    })
}

fn timeout(value: &Expr) -> syn::Result<Duration> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`timeout` takes a duration string, as in `timeout = \"30s\"`",
        ));
    };
    let text = lit.value();
    let duration = humantime::parse_duration(&text).map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!(
                "timeout {text:?} is not a duration: {e}; write one such as \"30s\", \"5m\", \"1h 30m\" or \"250ms\""
            ),
        )
    })?;
    if duration.is_zero() {
        return Err(syn::Error::new(
            lit.span(),
            "a zero timeout would fail every run; leave `timeout` out for no limit",
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> syn::Result<TaskArgs> {
        syn::parse_str(text)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(args) => panic!("{text:?} parsed as {args:?}"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" | "),
        }
    }

    #[test]
    fn no_arguments_leave_every_key_unset() {
        assert_eq!(parse("").unwrap(), TaskArgs::default());
    }

    #[test]
    fn every_key_is_read() {
        let args =
            parse(r#"name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s","#)
                .unwrap();
        assert_eq!(
            args,
            TaskArgs {
                name: Some("emails.send".to_owned()),
                queue: Some("emails".to_owned()),
                max_retries: Some(5),
                timeout: Some(Duration::from_secs(30)),
                ignore_result: false,
            }
        );
    }

    #[test]
    fn durations_are_read_as_humantime() {
        let read = |text: &str| parse(&format!("timeout = {text:?}")).unwrap().timeout;
        assert_eq!(read("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(read("5m"), Some(Duration::from_secs(300)));
        assert_eq!(read("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(read("2days"), Some(Duration::from_secs(2 * 86_400)));
    }

    #[test]
    fn a_bad_or_zero_duration_is_refused() {
        assert!(error(r#"timeout = "30 parsecs""#).contains("is not a duration"));
        assert!(error(r#"timeout = "soon""#).contains("\"30s\""));
        assert!(error(r#"timeout = "0s""#).contains("zero timeout"));
        assert!(error("timeout = 30").contains("duration string"));
    }

    #[test]
    fn an_unknown_key_lists_the_known_ones() {
        assert_eq!(
            error(r#"queue = "q", retries = 3"#),
            "unknown #[task] key `retries`; expected one of: name, queue, max_retries, timeout, ignore_result"
        );
        // A Rust keyword is reported as an unknown key too, not as a syntax error.
        assert!(error(r#"type = "x""#).starts_with("unknown #[task] key `type`"));
    }

    #[test]
    fn a_duplicate_key_is_refused() {
        assert_eq!(error(r#"queue = "a", queue = "b""#), "duplicate #[task] key `queue`");
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        assert_eq!(
            error(r#"nme = "x", max_retries = -1, timeout = "1 fortnight", nme = "y""#)
                .matches(" | ")
                .count(),
            3
        );
    }

    #[test]
    fn values_must_be_literals_of_the_right_kind() {
        assert!(error("name = emails").contains("`name` takes a string literal"));
        assert!(error(r#"queue = """#).contains("cannot be empty"));
        assert!(error(r#"max_retries = "5""#).contains("integer literal"));
        assert!(error("max_retries = 5_000_000_000").contains("fit in a u32"));
        assert_eq!(parse("max_retries = 0").unwrap().max_retries, Some(0));
    }

    #[test]
    fn ignore_result_is_a_flag_or_a_bool() {
        assert!(parse("ignore_result").unwrap().ignore_result);
        assert!(parse("queue = \"q\", ignore_result").unwrap().ignore_result);
        assert!(!parse("ignore_result = false").unwrap().ignore_result);
        assert!(!parse("").unwrap().ignore_result);
        assert!(error("ignore_result = 1").contains("`true` or `false`"));
        assert!(error("queue").contains("`queue` needs a value"));
    }

    #[test]
    fn a_broken_shape_is_a_syntax_error() {
        assert!(parse("name").is_err());
        assert!(parse(r#"name = "a" queue = "b""#).is_err());
    }
}
