//! Expands `#[task]` on an `async fn` into the function, unchanged, and a module of
//! the same name holding its typed `call`, its registration and compile-time checks.

use std::time::Duration;

use proc_macro2::{Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Signature, Type};

use crate::args::{Backoff, Guarantee, Jitter, Periodic, Schedule, TaskArgs};

/// The whole expansion of `#[task(args)] item`. On any error, the item comes back
/// unchanged with a `compile_error!` for each mistake, so the IDE keeps working.
pub(crate) fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    // The keys that were good are kept beside the errors, for the checks against the
    // signature below.
    let args = match TaskArgs::parse_all.parse2(args) {
        Ok((args, args_errors)) => {
            if let Some(e) = args_errors {
                errors.push(e);
            }
            args
        }
        Err(e) => {
            errors.push(e);
            TaskArgs::default()
        }
    };
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            errors.push(syn::Error::new_spanned(
                &item,
                "#[task] goes on an `async fn` at module level, as in \
                 `#[task] async fn send(to: String) -> Result<(), TaskError>`",
            ));
            return with_errors(item, errors);
        }
    };
    let task = Task::read(&func.sig, &mut errors);
    if let (Some(task), Some(periodic)) = (&task, &args.periodic) {
        task.check_periodic(periodic, &mut errors);
    }
    if let (Some(task), Some(key)) = (&task, &args.concurrency_key) {
        task.check_concurrency_key(key, &mut errors);
    }
    let task = match task {
        Some(task) if errors.is_empty() => task,
        _ => return with_errors(item, errors),
    };
    let module = task.module(&func, &args);
    quote! {
        #func
        #module
    }
}

fn with_errors(item: TokenStream, errors: Errors) -> TokenStream {
    let errors = errors.0.map(|e| e.to_compile_error());
    quote! {
        #item
        #errors
    }
}

/// Every mistake found, combined so the user sees them all at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// What the expansion needs to know about the function's signature.
struct Task<'a> {
    ident: &'a Ident,
    /// The span of the parenthesized parameters.
    inputs: Span,
    params: Vec<Param<'a>>,
    output: &'a Type,
}

/// One parameter of the function.
enum Param<'a> {
    /// A call argument: the name `call` gives it, and its type.
    Arg(Ident, &'a Type),
    /// The `TaskContext` the worker passes in.
    Context,
}

impl<'a> Task<'a> {
    /// Reads the signature, pushing an error for each thing a task cannot be. `None`
    /// when the signature is too far off to expand.
    fn read(sig: &'a Signature, errors: &mut Errors) -> Option<Task<'a>> {
        let ident = &sig.ident;
        if sig.asyncness.is_none() {
            errors.push(syn::Error::new(
                sig.fn_token.span,
                format!("#[task] functions must be async: write `async fn {ident}(...)`"),
            ));
        }
        if let Some(unsafety) = &sig.unsafety {
            errors.push(syn::Error::new(
                unsafety.span,
                "a #[task] cannot be `unsafe`: a worker calls it with whatever arguments \
                 a job carries; make it a safe fn",
            ));
        }
        if let Some(abi) = &sig.abi {
            errors.push(syn::Error::new_spanned(
                abi,
                "a #[task] cannot have an `extern` ABI: it is called from Rust only",
            ));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            let generics = &sig.generics;
            let where_clause = &generics.where_clause;
            errors.push(syn::Error::new_spanned(
                quote!(#generics #where_clause),
                "a #[task] cannot be generic: its argument types must be known to decode them",
            ));
        }

        let mut params = Vec::new();
        let mut context_seen = false;
        for (index, input) in sig.inputs.iter().enumerate() {
            let typed = match input {
                FnArg::Receiver(receiver) => {
                    errors.push(syn::Error::new_spanned(
                        receiver,
                        "a #[task] cannot take `self`: tasks are free functions; pass the \
                         data as arguments",
                    ));
                    continue;
                }
                FnArg::Typed(typed) => typed,
            };
            let ty = &*typed.ty;
            if is_context(ty) {
                if context_seen {
                    errors.push(syn::Error::new_spanned(
                        ty,
                        "a #[task] takes at most one `TaskContext`",
                    ));
                }
                context_seen = true;
                params.push(Param::Context);
                continue;
            }
            if let Type::Reference(reference) = ty {
                if is_context(&reference.elem) {
                    errors.push(syn::Error::new_spanned(
                        ty,
                        "take the `TaskContext` by value: `ctx: TaskContext`; each run gets \
                         its own",
                    ));
                    continue;
                }
            }
            if let Some(problem) = scan(ty.to_token_stream()) {
                errors.push(syn::Error::new_spanned(ty, problem.argument_message()));
                continue;
            }
            params.push(Param::Arg(arg_name(&typed.pat, index), ty));
        }

        let output = match &sig.output {
            ReturnType::Type(_, output) => &**output,
            ReturnType::Default => {
                errors.push(syn::Error::new(
                    ident.span(),
                    "a #[task] must return Result<T, E>; add `-> Result<(), TaskError>`",
                ));
                return None;
            }
        };
        if scan(output.to_token_stream()) == Some(Problem::ImplTrait) {
            errors.push(syn::Error::new_spanned(
                output,
                "a #[task] cannot return `impl Trait`: name the type, as its value is \
                 decoded by whoever awaits the result",
            ));
        }
        Some(Task { ident, inputs: sig.paren_token.span.join(), params, output })
    }

    /// A periodic task is enqueued by the scheduler with no arguments, so one that
    /// takes call arguments is an error at its `cron` or `every` key.
    fn check_periodic(&self, periodic: &Periodic, errors: &mut Errors) {
        if !self.params.iter().any(|p| matches!(p, Param::Arg(..))) {
            return;
        }
        let key = periodic.schedule.key();
        let task = self.ident.unraw();
        errors.push(syn::Error::new(
            periodic.key,
            format!(
                "a periodic task runs with no arguments, and `{task}` takes some: remove \
                 `{key}`, and schedule a call with its arguments from the manager instead, as \
                 in `manager.periodic({task}::call(args), Schedule::{key}(..)?)`"
            ),
        ));
    }

    /// `concurrency_key = tenant` names one of the task's call arguments.
    fn check_concurrency_key(&self, key: &Ident, errors: &mut Errors) {
        let names: Vec<String> = self
            .params
            .iter()
            .filter_map(|p| match p {
                Param::Arg(name, _) if !name.to_string().starts_with("__arg") => {
                    Some(name.to_string())
                }
                _ => None,
            })
            .collect();
        if names.iter().any(|name| key == name) {
            return;
        }
        let known = if names.is_empty() {
            "it takes none".to_owned()
        } else {
            format!("its arguments are: {}", names.join(", "))
        };
        errors.push(syn::Error::new(
            key.span(),
            format!(
                "`concurrency_key = {key}` names no argument of this task ({known}); the \
                 key is the value of one argument, as text"
            ),
        ));
    }

    /// The module named after the function: `NAME`, `QUEUE`, `call`, the runner the
    /// worker calls, the compile-time checks and the registration.
    fn module(&self, func: &ItemFn, args: &TaskArgs) -> TokenStream {
        let ident = self.ident;
        let vis = &func.vis;
        // A `#[cfg]` the macro sees on the function must hide its module too.
        let cfgs = func.attrs.iter().filter(|a| a.path().is_ident("cfg"));
        let name = args.name.clone().unwrap_or_else(|| ident.unraw().to_string());
        let queue = args.queue.as_deref().unwrap_or("default");
        let doc = format!(
            "The typed handle of task `{name}`: `{}::call(..)` builds a call to enqueue.",
            ident.unraw()
        );
        let ignore_result = args.ignore_result;
        let partitions = args.partitions.unwrap_or(1);
        let optional = |v: Option<u32>| match v {
            Some(n) => quote!(Some(#n)),
            None => quote!(None),
        };
        let (burst, concurrency) = (optional(args.burst), optional(args.concurrency));
        let rate_limit = match &args.rate_limit {
            Some(rate) => quote!(Some(#rate)),
            None => quote!(None),
        };
        let limit_gate = match &args.limit_gate {
            Some(gate) => quote!(Some(#gate)),
            None => quote!(None),
        };
        let max_retries = match args.max_retries {
            Some(n) => quote!(Some(#n)),
            None => quote!(None),
        };
        let backoff = match args.backoff {
            Some(backoff) => {
                let backoff = backoff_tokens(backoff, args.jitter.unwrap_or(Jitter::None));
                quote!(Some(#backoff))
            }
            None => quote!(None),
        };
        let guarantee = match args.guarantee {
            Some(guarantee) => {
                let variant = match guarantee {
                    Guarantee::AtMostOnce => quote!(AtMostOnce),
                    Guarantee::AtLeastOnce => quote!(AtLeastOnce),
                    Guarantee::ExactlyOnce => quote!(ExactlyOnce),
                };
                quote!(Some(::dmq_core::__private::Guarantee::#variant))
            }
            None => quote!(None),
        };
        let periodic = match args.periodic.as_ref().map(|p| &p.schedule) {
            Some(Schedule::Cron(expr)) => {
                quote!(Some(::dmq_core::__private::PeriodicSpec::Cron(#expr)))
            }
            Some(Schedule::Every(interval)) => {
                let interval = duration_tokens(*interval);
                quote!(Some(::dmq_core::__private::PeriodicSpec::Every(#interval)))
            }
            None => quote!(None),
        };
        // The policy function is coerced to the type the registration holds in a
        // constant spanned at the user's path, so a function of another signature is
        // a type error on that path.
        let (retry_fn, retry) = match &args.retry {
            Some(policy) => {
                let path = reroot(policy.0.to_token_stream());
                let retry_fn = quote_spanned! {policy.0.span()=>
                    const __RETRY: fn() -> ::dmq_core::__private::RetryPolicy = #path;
                };
                (retry_fn, quote!(Some(__RETRY)))
            }
            None => (TokenStream::new(), quote!(None)),
        };
        let timeout = match args.timeout {
            Some(t) => {
                let t = duration_tokens(t);
                quote!(Some(#t))
            }
            None => quote!(None),
        };

        let output = reroot(self.output.to_token_stream());
        let mut call_params = Vec::new();
        let mut call_names = Vec::new();
        let mut arg_types = Vec::new();
        let mut checks = Vec::new();
        let mut decoded = Vec::new();
        let mut passed = Vec::new();
        let mut takes_context = false;
        for param in &self.params {
            match param {
                Param::Arg(name, ty) => {
                    let ty_tokens = reroot(ty.to_token_stream());
                    let local = format_ident!("__arg{}", decoded.len());
                    checks.push(quote_spanned! {ty.span()=>
                        ::dmq_core::__private::assert_value::<#ty_tokens>();
                    });
                    call_params.push(quote!(#name: #ty_tokens));
                    call_names.push(name);
                    arg_types.push(ty_tokens);
                    passed.push(local.clone());
                    decoded.push(local);
                }
                Param::Context => {
                    takes_context = true;
                    passed.push(format_ident!("ctx"));
                }
            }
        }
        let ctx = if takes_context { format_ident!("ctx") } else { format_ident!("_ctx") };
        // Every use of the return type is spanned at it, so a return type that is not
        // a `Result` of task values is reported there, and once: rustc drops the
        // identical errors of the other uses. (On stable, the span is its first token.)
        // `finish` gets `into_task_result`'s value rather than the raw return so that
        // its error is one of those identical ones, not a second "required by a bound
        // in `finish`".
        let output_span = self.output.span();
        let call_output = quote_spanned! {output_span=>
            ::dmq_core::__private::Call<<#output as ::dmq_core::__private::TaskReturn>::Ok>
        };
        let finish = quote_spanned! {output_span=>
            ::dmq_core::__private::finish(
                <#output as ::dmq_core::__private::TaskReturn>::into_task_result(returned)
            )
        };
        // A type that cannot travel fails `assert_value` at that type. Encoding and
        // decoding the argument tuple fail too: when there is one argument named by
        // one token, they are spanned at it, so rustc reports each failing bound once;
        // otherwise they point at the parameter list.
        let tuple_span = match self.params.iter().find_map(|p| match p {
            Param::Arg(_, ty) => Some(ty),
            Param::Context => None,
        }) {
            Some(ty) if arg_types.len() == 1 && ty.to_token_stream().into_iter().count() == 1 => {
                ty.span()
            }
            _ => self.inputs,
        };
        let encode = quote_spanned! {tuple_span=>
            ::dmq_core::__private::Call::new(NAME, QUEUE, &(#(#call_names,)*))
        };
        let encode = limits_tokens(args, encode);
        // A task without arguments takes the wire format's empty array as well as the
        // nil that `()` encodes to.
        let decode = if arg_types.is_empty() {
            quote!(::dmq_core::__private::decode_no_args(NAME, args))
        } else {
            quote_spanned! {tuple_span=>
                ::dmq_core::__private::decode_args::<(#(#arg_types,)*)>(NAME, args)
            }
        };
        // The call of the function is the macro's own code (so no lint about how it
        // is written fires at the user's name) ...
        let mut callee = ident.clone();
        callee.set_span(Span::call_site());
        let call_function = quote!(super::#callee(#(#passed),*));
        // ... but a future that is not `Send` is reported at the function's name.
        let run = quote_spanned! {ident.span()=>
            ::dmq_core::__private::Box::pin(async move {
                let (#(#decoded,)*) = __decode(&args)?;
                let returned: #output = #call_function.await;
                #finish
            })
        };
        // `line!()` spanned at the function's name reports the function's line, not
        // the attribute's.
        let line = quote_spanned!(ident.span()=> line!());

        quote! {
            #(#cfgs)*
            #[doc = #doc]
            #[allow(
                non_snake_case,
                unused_imports,
                dead_code,
                missing_docs,
                unreachable_pub,
                clippy::all,
                clippy::pedantic
            )]
            #vis mod #ident {
                use super::*;

                /// The task's registered name.
                pub const NAME: &str = #name;
                /// The task's default queue.
                pub const QUEUE: &str = #queue;

                /// A call of this task with these arguments, ready to enqueue.
                pub fn call(#(#call_params),*) -> #call_output {
                    #(#checks)*
                    #encode
                }

                fn __run(
                    args: ::dmq_core::__private::Vec<u8>,
                    #ctx: ::dmq_core::__private::TaskContext,
                ) -> ::dmq_core::__private::TaskFuture {
                    #(#checks)*
                    #run
                }

                /// The argument tuple, decoded as a worker does before a run.
                fn __decode(
                    args: &[u8],
                ) -> ::dmq_core::__private::Result<
                    (#(#arg_types,)*),
                    ::dmq_core::__private::RunError,
                > {
                    #(#checks)*
                    #decode
                }

                /// Whether `args` decode into the argument tuple, without a run.
                fn __check_args(
                    args: &[u8],
                ) -> ::dmq_core::__private::Result<(), ::dmq_core::__private::RunError> {
                    __decode(args).map(|_| ())
                }

                #retry_fn

                ::dmq_core::__private::inventory::submit! {
                    ::dmq_core::__private::TaskRegistration {
                        name: NAME,
                        queue: QUEUE,
                        max_retries: #max_retries,
                        backoff: #backoff,
                        retry: #retry,
                        guarantee: #guarantee,
                        periodic: #periodic,
                        timeout: #timeout,
                        ignore_result: #ignore_result,
                        partitions: #partitions,
                        rate_limit: #rate_limit,
                        burst: #burst,
                        concurrency: #concurrency,
                        limit_gate: #limit_gate,
                        // This module is named after the function, so its path is the
                        // function's path.
                        path: module_path!(),
                        file: file!(),
                        line: #line,
                        run: __run,
                        check_args: __check_args,
                    }
                }
            }
        }
    }
}

/// A `Duration` as a `const` expression: `Duration::new(secs, nanos)`.
fn duration_tokens(d: Duration) -> TokenStream {
    let secs = Literal::u64_suffixed(d.as_secs());
    let nanos = Literal::u32_suffixed(d.subsec_nanos());
    quote!(::dmq_core::__private::Duration::new(#secs, #nanos))
}

/// A `Backoff` built from its variant: the macro checked it as the constructors
/// would, and a registration is a `static`, where the constructors cannot run.
fn backoff_tokens(backoff: Backoff, jitter: Jitter) -> TokenStream {
    let jitter = match jitter {
        Jitter::None => quote!(::dmq_core::__private::Jitter::None),
        Jitter::Full => quote!(::dmq_core::__private::Jitter::Full),
        Jitter::Equal => quote!(::dmq_core::__private::Jitter::Equal),
    };
    let ms = Literal::u64_suffixed;
    match backoff {
        Backoff::Fixed { delay_ms } => {
            let delay_ms = ms(delay_ms);
            quote!(::dmq_core::__private::Backoff::Fixed { delay_ms: #delay_ms, jitter: #jitter })
        }
        Backoff::Linear { base_ms, step_ms, max_ms } => {
            let (base_ms, step_ms, max_ms) = (ms(base_ms), ms(step_ms), ms(max_ms));
            quote!(::dmq_core::__private::Backoff::Linear {
                base_ms: #base_ms,
                step_ms: #step_ms,
                max_ms: #max_ms,
                jitter: #jitter,
            })
        }
        Backoff::Exponential { base_ms, factor, max_ms } => {
            let (base_ms, max_ms) = (ms(base_ms), ms(max_ms));
            // Finite: the parser refuses any other factor.
            let factor = Literal::f64_suffixed(factor);
            quote!(::dmq_core::__private::Backoff::Exponential {
                base_ms: #base_ms,
                factor: #factor,
                max_ms: #max_ms,
                jitter: #jitter,
            })
        }
    }
}

/// Whether `ty` names the worker's `TaskContext` (by any path ending in it).
fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "TaskContext" && last.arguments.is_none()),
        Type::Paren(paren) => is_context(&paren.elem),
        Type::Group(group) => is_context(&group.elem),
        _ => false,
    }
}

/// The name `call` gives the argument at `index`: the user's own name when the
/// pattern is a plain name (without its `mut`), `__argN` otherwise.
/// The call with the limits `#[task]` declares: its rate, burst and concurrency, and
/// the key taken from an argument (as text, before the arguments are encoded).
fn limits_tokens(args: &TaskArgs, encode: TokenStream) -> TokenStream {
    if args.rate_limit.is_none() && args.concurrency.is_none() {
        return encode;
    }
    let option = |v: Option<u32>| match v {
        Some(n) => quote!(Some(#n)),
        None => quote!(None),
    };
    let rate = match &args.rate_limit {
        Some(rate) => quote!(Some(#rate)),
        None => quote!(None),
    };
    let (burst, concurrency) = (option(args.burst), option(args.concurrency));
    let gate = match &args.limit_gate {
        Some(gate) => quote!(Some(#gate)),
        None => quote!(None),
    };
    let limited = quote!((#encode).with_task_limits(#rate, #burst, #concurrency, #gate));
    match &args.concurrency_key {
        Some(key) => quote! {{
            let __dmq_key = ::std::string::ToString::to_string(&#key);
            #limited.concurrency_key(__dmq_key)
        }},
        None => limited,
    }
}

fn arg_name(pat: &Pat, index: usize) -> Ident {
    match pat {
        // `NAME` and `QUEUE` are constants in the generated module, where a parameter
        // of that name would be a constant pattern.
        Pat::Ident(binding)
            if binding.subpat.is_none() && binding.ident != "NAME" && binding.ident != "QUEUE" =>
        {
            binding.ident.clone()
        }
        _ => format_ident!("__arg{index}"),
    }
}

/// Why a type cannot be a task argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    /// It contains a reference or a lifetime.
    Borrowed,
    /// It contains `impl Trait`.
    ImplTrait,
}

impl Problem {
    fn argument_message(self) -> &'static str {
        match self {
            Problem::Borrowed => {
                "task arguments must be owned: they are decoded from the job, so take \
                 `String` instead of `&str`, `Vec<T>` instead of `&[T]`, `T` instead of `&T`"
            }
            Problem::ImplTrait => {
                "a #[task] cannot be generic: its argument types must be known to decode \
                 them; name a type instead of `impl Trait`"
            }
        }
    }
}

/// Looks through a type's tokens for a reference (`&`), a lifetime (`'a`) or an
/// `impl Trait`, at any depth: `Vec<&str>` and `Cow<'static, str>` are borrowed too.
fn scan(tokens: TokenStream) -> Option<Problem> {
    for token in tokens {
        match token {
            TokenTree::Punct(p) if p.as_char() == '&' || p.as_char() == '\'' => {
                return Some(Problem::Borrowed);
            }
            TokenTree::Ident(i) if i == "impl" => return Some(Problem::ImplTrait),
            TokenTree::Group(g) => {
                if let Some(problem) = scan(g.stream()) {
                    return Some(problem);
                }
            }
            _ => {}
        }
    }
    None
}

/// Rewrites a type the user wrote next to the function so it means the same inside
/// the generated module, one level down: a path starting with `super` gets one more
/// `super::`. Paths from `crate`, `self` (through `use super::*`) or a plain name
/// already resolve the same.
fn reroot(tokens: TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    // How many `:` came just before: `super` after `::` is not a path's start.
    let mut colons = 0;
    for token in tokens {
        match token {
            TokenTree::Ident(ident) if ident == "super" && colons < 2 => {
                let span = ident.span();
                let mut first = Punct::new(':', Spacing::Joint);
                first.set_span(span);
                let mut second = Punct::new(':', Spacing::Alone);
                second.set_span(span);
                out.extend([
                    TokenTree::Ident(Ident::new("super", span)),
                    TokenTree::Punct(first),
                    TokenTree::Punct(second),
                    TokenTree::Ident(ident),
                ]);
                colons = 0;
            }
            TokenTree::Group(group) => {
                let mut rerooted = Group::new(group.delimiter(), reroot(group.stream()));
                rerooted.set_span(group.span());
                out.extend([TokenTree::Group(rerooted)]);
                colons = 0;
            }
            TokenTree::Punct(punct) if punct.as_char() == ':' => {
                out.extend([TokenTree::Punct(punct)]);
                colons += 1;
            }
            other => {
                out.extend([other]);
                colons = 0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(text: &str) -> Type {
        syn::parse_str(text).unwrap()
    }

    #[test]
    fn borrowed_types_are_found_at_any_depth() {
        for text in ["&str", "&'static str", "Vec<&[u8]>", "Cow<'static, str>", "(u8, &u8)"] {
            assert_eq!(scan(ty(text).to_token_stream()), Some(Problem::Borrowed), "{text}");
        }
        for text in ["String", "Vec<(u8, String)>", "[u8; 4]", "Option<Box<Order>>"] {
            assert_eq!(scan(ty(text).to_token_stream()), None, "{text}");
        }
        assert_eq!(scan(ty("Vec<impl Clone>").to_token_stream()), Some(Problem::ImplTrait));
    }

    #[test]
    fn the_context_is_found_by_its_last_segment() {
        assert!(is_context(&ty("TaskContext")));
        assert!(is_context(&ty("dmq_core::TaskContext")));
        assert!(!is_context(&ty("&TaskContext")));
        assert!(!is_context(&ty("TaskContextual")));
    }

    #[test]
    fn call_keeps_plain_names_and_numbers_the_rest() {
        let name = |text: &str, index| {
            let pat = syn::Pat::parse_single.parse_str(text).unwrap();
            arg_name(&pat, index).to_string()
        };
        use syn::parse::Parser;
        assert_eq!(name("to", 0), "to");
        assert_eq!(name("mut count", 1), "count");
        assert_eq!(name("(a, b)", 2), "__arg2");
        assert_eq!(name("_", 3), "__arg3");
        assert_eq!(name("NAME", 4), "__arg4");
    }

    #[test]
    fn super_paths_gain_one_level() {
        let rerooted = |text: &str| reroot(ty(text).to_token_stream()).to_string();
        assert_eq!(rerooted("super::Order"), "super :: super :: Order");
        assert_eq!(rerooted("super::super::Order"), "super :: super :: super :: Order");
        assert_eq!(rerooted("Vec<super::Order>"), "Vec < super :: super :: Order >");
        assert_eq!(rerooted("crate::a::Order"), "crate :: a :: Order");
        assert_eq!(rerooted("(u8, super::X)"), "(u8 , super :: super :: X)");
    }

    fn expand(attr: &str, item: &str) -> String {
        task(attr.parse().unwrap(), item.parse().unwrap()).to_string()
    }

    #[test]
    fn a_good_task_expands_to_the_function_and_its_module() {
        let out = expand(
            r#"name = "emails.send", queue = "emails", timeout = "1.5s""#,
            "pub async fn send_email(mut to: String, ctx: TaskContext, body: String) \
             -> Result<(), TaskError> { Ok(()) }",
        );
        assert!(out.starts_with("pub async fn send_email (mut to : String"), "{out}");
        assert!(out.contains("pub mod send_email"), "{out}");
        assert!(out.contains("pub const NAME : & str = \"emails.send\""), "{out}");
        assert!(out.contains("pub fn call (to : String , body : String)"), "{out}");
        assert!(out.contains("send_email (__arg0 , ctx , __arg1) . await"), "{out}");
        assert!(out.contains("Duration :: new (1u64 , 500000000u32)"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
        // The arguments decode in one place, for a run and for a check alone.
        assert!(out.contains("decode_args :: < (String , String ,) > (NAME , args)"), "{out}");
        assert!(out.contains("__decode (& args) ?"), "{out}");
        assert!(out.contains("check_args : __check_args"), "{out}");
    }

    #[test]
    fn a_task_without_arguments_decodes_none() {
        let out = expand("", "async fn tick(ctx: TaskContext) -> Result<(), E> { Ok(()) }");
        assert!(out.contains("decode_no_args (NAME , args)"), "{out}");
        assert!(!out.contains("decode_args"), "{out}");
    }

    #[test]
    fn backoff_jitter_and_guarantee_fill_the_registration() {
        let out = expand(
            r#"backoff = "exponential(500ms, 1.5, 1m)", jitter = "full", guarantee = "at_most_once""#,
            "async fn f() -> Result<(), E> { Ok(()) }",
        );
        let backoff = "backoff : Some (:: dmq_core :: __private :: Backoff :: Exponential { \
                       base_ms : 500u64 , factor : 1.5f64 , max_ms : 60000u64 , \
                       jitter : :: dmq_core :: __private :: Jitter :: Full , })";
        assert!(out.contains(backoff), "{out}");
        assert!(out.contains("retry : None"), "{out}");
        assert!(
            out.contains("guarantee : Some (:: dmq_core :: __private :: Guarantee :: AtMostOnce)"),
            "{out}"
        );
        let out = expand(r#"backoff = "fixed(2s)""#, "async fn f() -> Result<(), E> { Ok(()) }");
        assert!(
            out.contains(
                "Backoff :: Fixed { delay_ms : 2000u64 , jitter : :: dmq_core :: __private :: Jitter :: None }"
            ),
            "{out}"
        );
        assert!(out.contains("guarantee : None"), "{out}");
    }

    #[test]
    fn a_retry_policy_is_coerced_to_the_registrations_type() {
        let out = expand("retry = super::policy", "async fn f() -> Result<(), E> { Ok(()) }");
        // One level down, as the function's types are.
        assert!(
            out.contains(
                "const __RETRY : fn () -> :: dmq_core :: __private :: RetryPolicy = super :: super :: policy ;"
            ),
            "{out}"
        );
        assert!(out.contains("retry : Some (__RETRY)"), "{out}");
        assert!(out.contains("backoff : None"), "{out}");
    }

    #[test]
    fn cron_and_every_fill_the_registration() {
        let out = expand(r#"cron = "0 */4 * * *""#, "async fn f() -> Result<(), E> { Ok(()) }");
        assert!(
            out.contains(
                "periodic : Some (:: dmq_core :: __private :: PeriodicSpec :: Cron (\"0 */4 * * *\"))"
            ),
            "{out}"
        );
        let out = expand(
            r#"every = "1m 1500ms""#,
            "async fn f(ctx: TaskContext) -> Result<(), E> { Ok(()) }",
        );
        assert!(
            out.contains(
                "periodic : Some (:: dmq_core :: __private :: PeriodicSpec :: Every (\
                 :: dmq_core :: __private :: Duration :: new (61u64 , 500000000u32)))"
            ),
            "{out}"
        );
        assert!(!out.contains("compile_error"), "{out}");
        let out = expand("", "async fn f() -> Result<(), E> { Ok(()) }");
        assert!(out.contains("periodic : None"), "{out}");
    }

    #[test]
    fn a_periodic_task_with_arguments_is_refused_at_its_key() {
        for key in ["cron = \"@hourly\"", "every = \"5m\""] {
            let item = "async fn r#report(day: u32, ctx: TaskContext) -> Result<(), E> { Ok(()) }";
            let out = expand(key, item);
            let name = &key[..key.find(' ').unwrap()];
            let expected = format!(
                "a periodic task runs with no arguments, and `report` takes some: remove \
                 `{name}`, and schedule a call with its arguments from the manager instead, as \
                 in `manager.periodic(report::call(args), Schedule::{name}(..)?)`"
            );
            assert!(out.contains(&expected), "{expected}: {out}");
            assert!(!out.contains("mod r#report"), "{out}");
        }
        // Beside another mistake in the attribute, both are reported.
        let out =
            expand(r#"every = "5m", colour = 1"#, "async fn f(a: u8) -> Result<(), E> { Ok(()) }");
        assert!(out.contains("unknown #[task] key `colour`"), "{out}");
        assert!(out.contains("a periodic task runs with no arguments"), "{out}");
    }

    #[test]
    fn a_cfg_on_the_function_hides_its_module_too() {
        let out = expand("", "#[cfg(feature = \"mail\")] async fn f() -> Result<(), E> { Ok(()) }");
        assert!(out.contains("# [cfg (feature = \"mail\")] # [doc"), "{out}");
    }

    #[test]
    fn argument_and_signature_errors_are_reported_together() {
        let out = expand("queue = 1, colour = \"red\"", "fn f(s: &str) {}");
        for expected in [
            "`queue` takes a string",
            "unknown #[task] key `colour`",
            "must be async",
            "must be owned",
            "must return",
        ] {
            assert!(out.contains(expected), "{expected}: {out}");
        }
        assert!(out.starts_with("fn f (s : & str) { }"), "{out}");
    }

    #[test]
    fn a_bad_task_comes_back_unchanged_with_every_error() {
        let item = "fn f<T>(&self, s: &str) { }";
        let out = expand("", item);
        let unchanged: TokenStream = item.parse().unwrap();
        assert!(out.starts_with(&unchanged.to_string()), "{out}");
        assert!(!out.contains("mod f"), "{out}");
        for expected in [
            "must be async",
            "cannot be generic",
            "cannot take `self`",
            "must be owned",
            "must return",
        ] {
            assert!(out.contains(expected), "{expected}: {out}");
        }
    }
}
