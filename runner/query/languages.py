"""``lang:`` names and the file names they cover.

Sourcegraph detects a file's language with go-enry; locally we go by file
extension (and by whole file name for the few languages whose files have no
extension, like ``Dockerfile``). Ambiguous extensions (``.h``) count for every
language that uses them, which errs towards finding a file rather than
missing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    name: str
    aliases: tuple[str, ...]
    extensions: tuple[str, ...] = ()
    filenames: tuple[str, ...] = ()


LANGUAGES: tuple[Language, ...] = (
    Language("c", (), (".c", ".h")),
    Language("c#", ("csharp", "cs"), (".cs", ".csx")),
    Language("c++", ("cpp",), (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h")),
    Language("clojure", (), (".clj", ".cljs", ".cljc", ".edn")),
    Language("css", (), (".css",)),
    Language("dart", (), (".dart",)),
    Language(
        "dockerfile",
        ("docker", "containerfile"),
        (".dockerfile",),
        ("Dockerfile", "Containerfile"),
    ),
    Language("elixir", (), (".ex", ".exs")),
    Language("erlang", (), (".erl", ".hrl")),
    Language("go", ("golang",), (".go",)),
    Language("graphql", (), (".graphql", ".gql")),
    Language("groovy", (), (".groovy", ".gradle", ".gvy"), ("Jenkinsfile",)),
    Language("haskell", (), (".hs", ".lhs")),
    Language("hcl", ("terraform", "tf"), (".hcl", ".tf", ".tfvars", ".nomad")),
    Language("html", (), (".html", ".htm", ".xhtml")),
    Language("ini", (), (".ini", ".cfg")),
    Language("java", (), (".java",)),
    Language("javascript", ("js",), (".js", ".jsx", ".mjs", ".cjs")),
    Language("json", (), (".json", ".jsonc", ".json5")),
    Language("julia", (), (".jl",)),
    Language("kotlin", (), (".kt", ".kts")),
    Language("less", (), (".less",)),
    Language("lua", (), (".lua",)),
    Language("makefile", ("make",), (".mk", ".mak"), ("Makefile", "GNUmakefile", "makefile")),
    Language("markdown", ("md",), (".md", ".markdown", ".mdx")),
    Language("nix", (), (".nix",)),
    Language("objective-c", ("objc", "objectivec"), (".m", ".h")),
    Language("ocaml", (), (".ml", ".mli")),
    Language("perl", (), (".pl", ".pm")),
    Language("php", (), (".php", ".phtml", ".php3", ".php4", ".php5", ".phps")),
    Language("powershell", ("pwsh",), (".ps1", ".psm1", ".psd1")),
    Language("protocol buffer", ("protobuf", "proto"), (".proto",)),
    Language("python", ("py",), (".py", ".pyi", ".pyw")),
    Language("r", (), (".r",)),
    Language("ruby", ("rb",), (".rb", ".rake", ".gemspec"), ("Gemfile", "Rakefile")),
    Language("rust", ("rs",), (".rs",)),
    Language("sass", (), (".sass",)),
    Language("scala", (), (".scala", ".sc")),
    Language("scss", (), (".scss",)),
    Language("shell", ("bash", "sh", "zsh"), (".sh", ".bash", ".zsh")),
    Language("sql", (), (".sql",)),
    Language("starlark", ("bazel",), (".bzl", ".star"), ("BUILD", "BUILD.bazel", "WORKSPACE")),
    Language("svelte", (), (".svelte",)),
    Language("swift", (), (".swift",)),
    Language("toml", (), (".toml",)),
    Language("typescript", ("ts",), (".ts", ".tsx", ".mts", ".cts")),
    Language("vue", (), (".vue",)),
    Language(
        "xml",
        (),
        (".xml", ".xsd", ".xsl", ".xslt", ".csproj", ".fsproj", ".vbproj", ".props", ".targets"),
    ),
    Language("yaml", ("yml",), (".yaml", ".yml")),
    Language("zig", (), (".zig",)),
)

_BY_NAME: dict[str, Language] = {}
for _language in LANGUAGES:
    for _key in (_language.name, *_language.aliases):
        _BY_NAME[_key] = _language


def find_language(name: str) -> Language | None:
    """The language ``lang:NAME`` means; names are case-insensitive."""
    return _BY_NAME.get(name.strip().lower())


def language_path_regex(language: Language) -> str:
    """A regular expression (for ``re.search``) matching the language's file paths."""
    # Extensions are compared case-insensitively (``README.MD``), file names exactly.
    alternatives = ["(?i:" + re.escape(ext) + ")$" for ext in language.extensions]
    alternatives += ["(?:^|/)" + re.escape(name) + "$" for name in language.filenames]
    return "|".join(alternatives)
