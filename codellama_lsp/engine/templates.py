"""Prompt templates built as token ids, exactly as each model family was trained.

Why ids and not strings: a control token written into a string and re-tokenized is where the
transformers 5.x Code Llama regressions live (the tokenizer's fill-in marker path mis-tokenizes the
suffix in about 3 of 4 cases; its chat template is off by tokens after every ``<s>``). Here every
control token enters as its id and every text segment is encoded on its own with the leading-space
rule the family's reference uses (see ``tokenizer.py``).

Families, picked from the tokenizer's special tokens (overridable): Code Llama (PSM and SPM, Meta's
``infilling_prompt_tokens``; chat as ``chat_completion``, and the 70B ``Source:`` dialog format),
StarCoder2 (with its ``<repo_name>``/``<file_sep>`` repository format), DeepSeek-Coder,
Qwen2.5-Coder (with ``<|repo_name|>``/``<|file_sep|>``) and Codestral (suffix first). Models that were
not trained to infill (Code Llama - Python, 34B, 70B) complete left to right: ``fim`` is False,
``resolve_mode`` answers "none" and ``fim_ids`` falls back to ``prefix_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import first_line
from .backend import EngineError
from .tokenizer import Tokenizer

__all__ = ["Template", "TemplateError", "template_for", "FAMILIES", "detect_family", "infills"]

FAMILIES: tuple[str, ...] = ("codellama", "starcoder2", "deepseek", "qwen", "codestral", "plain")

# Tokens whose presence identifies a family, in detection order (most specific first).
_FAMILY_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("codellama", ("▁<PRE>", "▁<SUF>", "▁<MID>")),
    ("deepseek", ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")),
    ("qwen", ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")),
    ("starcoder2", ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")),
    ("codestral", ("[SUFFIX]", "[PREFIX]")),
)

# Meta's chat markers (llama/generation.py).
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"

Message = Mapping[str, Any]
RepoFiles = Sequence[tuple[str, str]]


class TemplateError(EngineError, ValueError):
    """A prompt cannot be built (bad chat roles, a family the tokenizer lacks, ...); one line that
    says what to change. An ``EngineError`` so model loading reports a bad ``template`` override."""


def detect_family(tokenizer: Tokenizer) -> str:
    """The template family the tokenizer's special tokens identify ("plain" when none)."""
    for family, markers in _FAMILY_MARKERS:
        if all(tokenizer.token_id(m) is not None for m in markers):
            return family
    return "plain"


def _config_value(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def _model_text(model_name: str, config: Any) -> str:
    names = [model_name or "", str(_config_value(config, "_name_or_path") or ""),
             str(_config_value(config, "name_or_path") or "")]
    return " ".join(names).lower()


def infills(family: str, *, model_name: str = "", config: Any = None) -> bool:
    """Whether a model of ``family`` was trained to infill, from its name and config.

    Code Llama: 7B and 13B (base and Instruct) infill; the Python variants and 34B do not (all
    sources agree); for 70B the sources disagree (Meta's current model card says no), so it is
    treated as left-to-right. Families whose control tokens also ship with general-purpose models
    need the name to say so: Mistral v3 tokenizers carry ``[SUFFIX]``/``[PREFIX]`` but only
    Codestral infills; Qwen2.5 tokenizers carry the FIM tokens but only the Coder models infill.
    Override with ``fim = true`` when you know better.
    """
    if family == "plain":
        return False
    text = _model_text(model_name, config)
    if family == "codestral":
        return "codestral" in text
    if family == "qwen":
        return "coder" in text
    if family == "codellama":
        if "python" in text or "34b" in text or "70b" in text:
            return False
        layers = _config_value(config, "num_hidden_layers")
        hidden = _config_value(config, "hidden_size")
        if layers == 48 and hidden == 8192:  # 34B shape
            return False
        if layers == 80:  # 70B shape
            return False
    return True


def _is_70b(model_name: str, config: Any) -> bool:
    return "70b" in _model_text(model_name, config) or _config_value(config, "num_hidden_layers") == 80


@dataclass
class Template:
    """Builds prompts for one model family. Subclasses fill in the family's formats."""

    tokenizer: Tokenizer
    fim: bool = True
    family: str = "plain"
    repo_format: bool = False
    fim_modes: tuple[str, ...] = ()  # layouts the family was trained on; first = default
    uses_bos: bool = True
    fim_stop_ids: list[int] = field(default_factory=list)
    chat_stop_ids: list[int] = field(default_factory=list)
    chat_format: str = "template"  # "inst"/"source" (Code Llama), "mistral", or the model's own template

    # -- helpers --------------------------------------------------------------------------------

    def _id(self, piece: str) -> int:
        token_id = self.tokenizer.token_id(piece)
        if token_id is None:
            raise TemplateError(f"the tokenizer has no {piece!r} token required by the {self.family} "
                                f"template; set `template = \"auto\"`")
        return token_id

    def _bos(self) -> list[int]:
        bos = self.tokenizer.bos_id
        return [bos] if self.uses_bos and bos is not None else []

    # -- public API -----------------------------------------------------------------------------

    def resolve_mode(self, mode: str = "spm") -> str:
        """The FIM layout ``fim_ids`` will really use for ``mode``: the requested one when the
        family was trained on it, else the family's own; "none" for left-to-right models."""
        if not self.fim or not self.fim_modes or mode == "none":
            return "none"
        return mode if mode in self.fim_modes else self.fim_modes[0]  # "auto" → the preferred one

    def fim_ids(self, prefix: str, suffix: str, mode: str = "spm", *, repo_files: RepoFiles | None = None,
                path: str | None = None, repo_name: str | None = None) -> list[int]:
        """Prompt ids for infilling between ``prefix`` and ``suffix`` (BOS included where the
        family uses one). ``repo_files`` = [(path, text)] is used only by families with a
        repository format (``repo_format``); for models that do not infill this is
        ``prefix_ids(prefix)``."""
        resolved = self.resolve_mode(mode)
        if resolved == "none":
            return self.prefix_ids(prefix)
        return self._fim(prefix, suffix, resolved, repo_files=repo_files or (), path=path, repo_name=repo_name)

    def _fim(self, prefix: str, suffix: str, mode: str, *, repo_files: RepoFiles, path: str | None,
             repo_name: str | None) -> list[int]:
        raise NotImplementedError

    def prefix_ids(self, prefix: str) -> list[int]:
        """Left-to-right prompt: BOS (where used) + the prefix with its implicit leading space."""
        return self._bos() + self.tokenizer.encode(prefix)

    def chat_ids(self, messages: Sequence[Message]) -> list[int]:
        """Prompt ids for a chat (roles system/user/assistant, ending with a user message)."""
        return self._chat_from_template(_validated(messages))

    def decode(self, ids: Sequence[int]) -> str:
        """Generated ids to text: cut at the first stop id, control pieces dropped, the leading
        space kept."""
        stops = set(self.fim_stop_ids) | set(self.chat_stop_ids)
        out: list[int] = []
        for token_id in ids:
            if token_id in stops:
                break
            out.append(token_id)
        return self.tokenizer.decode(out)

    def describe(self) -> dict[str, Any]:
        """What ``doctor`` and the status line show about the prompt format."""
        return {"family": self.family, "fim": self.fim, "fim_modes": list(self.fim_modes),
                "repo_format": self.repo_format, "chat_format": self.chat_format}

    # -- chat through the model's own Jinja template (families without a reference encoder) ------

    def _chat_from_template(self, messages: list[dict[str, str]]) -> list[int]:
        template = self.tokenizer.chat_template
        if not template:
            raise TemplateError(f"this {self.family} model has no chat format (no chat_template in its "
                                f"tokenizer_config.json); use an Instruct/chat model for chat")
        hf = self.tokenizer.hf
        try:
            if hf is None:  # a GGUF model (no transformers on that path), or transformers could not load it
                text = render_chat_template(template, messages, bos_token=self.tokenizer.bos_token or "",
                                            eos_token=self.tokenizer.eos_token or "")
            else:
                text = hf.apply_chat_template(messages, chat_template=template, tokenize=False,
                                              add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - Jinja errors (e.g. "roles must alternate")
            raise TemplateError(f"the model's chat template rejected the conversation: {first_line(exc)}") from None
        if not isinstance(text, str):
            raise TemplateError("the model's chat template did not render text")
        return self.tokenizer.encode_markup(text)


def render_chat_template(template: str, messages: list[dict[str, str]], *, bos_token: str, eos_token: str) -> str:
    """A model's Jinja chat template rendered the way transformers renders it (sandboxed, trimmed blocks,
    ``raise_exception`` and ``tojson`` available, generation prompt on), without importing transformers."""
    import json

    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token=bos_token,
                                            eos_token=eos_token)


def _validated(messages: Sequence[Message]) -> list[dict[str, str]]:
    if not messages:
        raise TemplateError("a chat needs at least one user message")
    out: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise TemplateError(f"chat message {index} must be {{role: system|user|assistant, content: str}}")
        item = {"role": role, "content": content}
        destination = message.get("destination")
        if isinstance(destination, str):
            item["destination"] = destination
        out.append(item)
    if out[-1]["role"] != "user":
        raise TemplateError(f"the last chat message must be from the user, got {out[-1]['role']}")
    return out


def _alternation_error() -> TemplateError:
    return TemplateError("chat roles must be an optional system message, then user and assistant alternating, "
                         "ending with user")


@dataclass
class CodeLlamaTemplate(Template):
    """Meta's reference formats (facebookresearch/codellama ``llama/generation.py``)."""

    chat_format: str = "inst"  # "inst" (7B/13B/34B Instruct) or "source" (70B Instruct)

    def _fim(self, prefix, suffix, mode, *, repo_files, path, repo_name):
        tok = self.tokenizer
        pre, suf, mid = self._id("▁<PRE>"), self._id("▁<SUF>"), self._id("▁<MID>")
        if mode == "psm":
            return self._bos() + [pre] + tok.encode(prefix) + [suf] + tok.encode(suffix, leading_space=False) + [mid]
        return self._bos() + [pre, suf] + tok.encode(suffix, leading_space=False) + [mid] + tok.encode(prefix)

    def chat_ids(self, messages):
        dialog = _validated(messages)
        if self.chat_format == "source":
            return self._source_dialog(dialog)
        return self._inst_dialog(dialog)

    def _inst_dialog(self, dialog: list[dict[str, str]]) -> list[int]:
        """``chat_completion``: earlier turns ``<s>[INST] u [/INST] a </s>``, then ``<s>[INST] u [/INST]``;
        a system prompt goes in front of the first user message inside ``<<SYS>>``."""
        tok = self.tokenizer
        bos, eos = tok.bos_id, tok.eos_id
        if bos is None or eos is None:
            raise TemplateError("the tokenizer lacks BOS/EOS needed by the Code Llama chat format")
        if dialog[0]["role"] == "system":
            if len(dialog) < 2:
                raise _alternation_error()
            first = dialog[1]
            dialog = [{"role": first["role"], "content": B_SYS + dialog[0]["content"] + E_SYS + first["content"]},
                      *dialog[2:]]
        if not (all(m["role"] == "user" for m in dialog[::2]) and all(m["role"] == "assistant" for m in dialog[1::2])):
            raise _alternation_error()
        ids: list[int] = []
        for prompt, answer in zip(dialog[::2], dialog[1::2]):
            text = f"{B_INST} {prompt['content'].strip()} {E_INST} {answer['content'].strip()} "
            ids += [bos] + tok.encode(text) + [eos]
        ids += [bos] + tok.encode(f"{B_INST} {dialog[-1]['content'].strip()} {E_INST}")
        return ids

    def _source_dialog(self, dialog: list[dict[str, str]]) -> list[int]:
        """70B-Instruct ``dialog_prompt_tokens``: ``<s>`` then per message `` Source: role`` (+
        ``Destination``) and ``\\n\\n content`` closed by ``<step>``; always starts with a system
        message (empty if none was given); ends with the assistant header."""
        tok = self.tokenizer
        step = self._id("<step>")
        if tok.bos_id is None:
            raise TemplateError("the tokenizer lacks BOS needed by the Code Llama 70B chat format")
        if dialog[0]["role"] != "system":
            dialog = [{"role": "system", "content": ""}, *dialog]
        if not (all(m["role"] == "user" for m in dialog[1::2]) and all(m["role"] == "assistant" for m in dialog[2::2])):
            raise _alternation_error()
        ids = [tok.bos_id]
        for message in dialog:
            headers = [f"Source: {message['role'].strip()}"]
            if message.get("destination") is not None:
                headers.append(f"Destination: {message['destination'].strip()}")
            ids += tok.encode(" " + "\n".join(headers))
            if message["content"]:
                ids += tok.encode("\n\n " + message["content"].strip())
            ids.append(step)
        ids += tok.encode(" Source: assistant\nDestination: user")
        ids += tok.encode("\n\n ")
        return ids


@dataclass
class StarCoder2Template(Template):
    """``<fim_prefix>pre<fim_suffix>suf<fim_middle>``; in a repository:
    ``<repo_name>name<file_sep>path\\ncode...<file_sep><fim_prefix>path\\npre<fim_suffix>suf<fim_middle>``
    (StarCoder2 paper §5.1; the metadata was present in half of the training samples)."""

    def _fim(self, prefix, suffix, mode, *, repo_files, path, repo_name):
        tok = self.tokenizer
        fp, fs, fm = self._id("<fim_prefix>"), self._id("<fim_suffix>"), self._id("<fim_middle>")
        ids = self._bos()
        if self.repo_format and repo_files:
            sep = self._id("<file_sep>")
            if repo_name:
                ids += [self._id("<repo_name>")] + tok.encode(repo_name, leading_space=False)
            for file_path, text in repo_files:
                ids += [sep] + tok.encode(f"{file_path}\n{text}", leading_space=False)
            ids += [sep, fp] + tok.encode(f"{path or ''}\n{prefix}", leading_space=False)
        else:
            ids += [fp] + tok.encode(prefix, leading_space=False)
        return ids + [fs] + tok.encode(suffix, leading_space=False) + [fm]

    def prefix_ids(self, prefix):
        return self._bos() + self.tokenizer.encode(prefix, leading_space=False)


@dataclass
class DeepSeekTemplate(Template):
    """``<｜begin▁of▁sentence｜><｜fim▁begin｜>pre<｜fim▁hole｜>suf<｜fim▁end｜>`` (DeepSeek-Coder README);
    its repository context is plain ``#path`` text, so there is no native repository format."""

    def _fim(self, prefix, suffix, mode, *, repo_files, path, repo_name):
        tok = self.tokenizer
        begin, hole, end = self._id("<｜fim▁begin｜>"), self._id("<｜fim▁hole｜>"), self._id("<｜fim▁end｜>")
        return (self._bos() + [begin] + tok.encode(prefix, leading_space=False) + [hole]
                + tok.encode(suffix, leading_space=False) + [end])

    def prefix_ids(self, prefix):
        return self._bos() + self.tokenizer.encode(prefix, leading_space=False)


@dataclass
class QwenTemplate(Template):
    """``<|fim_prefix|>pre<|fim_suffix|>suf<|fim_middle|>``; in a repository (Qwen2.5-Coder README):
    ``<|repo_name|>name\\n<|file_sep|>path\\ncode\\n<|file_sep|>...<|file_sep|>path\\n<|fim_prefix|>...``."""

    def _fim(self, prefix, suffix, mode, *, repo_files, path, repo_name):
        tok = self.tokenizer
        fp, fs, fm = self._id("<|fim_prefix|>"), self._id("<|fim_suffix|>"), self._id("<|fim_middle|>")
        ids: list[int] = []
        if self.repo_format and repo_files:
            sep = self._id("<|file_sep|>")
            if repo_name:
                ids += [self._id("<|repo_name|>")] + tok.encode(f"{repo_name}\n", leading_space=False)
            for file_path, text in repo_files:
                ids += [sep] + tok.encode(f"{file_path}\n{text}\n", leading_space=False)
            ids += [sep] + tok.encode(f"{path or ''}\n", leading_space=False)
        return (ids + [fp] + tok.encode(prefix, leading_space=False) + [fs]
                + tok.encode(suffix, leading_space=False) + [fm])

    def prefix_ids(self, prefix):
        return self._bos() + self.tokenizer.encode(prefix, leading_space=False)


@dataclass
class CodestralTemplate(Template):
    """``<s>[SUFFIX]suf[PREFIX]▁pre`` (mistral-common ``encode_fim``): suffix first, without a
    leading space; the prefix keeps SentencePiece's; the model continues the prefix."""

    chat_format: str = "mistral"

    def _fim(self, prefix, suffix, mode, *, repo_files, path, repo_name):
        tok = self.tokenizer
        return (self._bos() + [self._id("[SUFFIX]")] + tok.encode(suffix, leading_space=False)
                + [self._id("[PREFIX]")] + tok.encode(prefix))

    def chat_ids(self, messages):
        """Mistral instruct format: ``<s>[INST]▁u[/INST]▁a</s>[INST]▁u[/INST]``; a system prompt
        is put in front of the last user message (mistral-common v3)."""
        dialog = _validated(messages)
        tok = self.tokenizer
        system = ""
        if dialog[0]["role"] == "system":
            system, dialog = dialog[0]["content"], dialog[1:]
        if not dialog or not (all(m["role"] == "user" for m in dialog[::2])
                              and all(m["role"] == "assistant" for m in dialog[1::2])):
            raise _alternation_error()
        inst, end_inst = self._id("[INST]"), self._id("[/INST]")
        if tok.bos_id is None or tok.eos_id is None:
            raise TemplateError("the tokenizer lacks BOS/EOS needed by the Mistral chat format")
        ids = [tok.bos_id]
        for index, message in enumerate(dialog):
            if message["role"] == "user":
                content = message["content"]
                if system and index == len(dialog) - 1:
                    content = f"{system}\n\n{content}"
                ids += [inst] + tok.encode(content) + [end_inst]
            else:
                ids += tok.encode(message["content"]) + [tok.eos_id]
        return ids


@dataclass
class PlainTemplate(Template):
    """A causal model with no FIM tokens: left to right from the prefix; chat through the
    model's own chat template when it has one."""


_CLASSES: dict[str, type[Template]] = {
    "codellama": CodeLlamaTemplate,
    "starcoder2": StarCoder2Template,
    "deepseek": DeepSeekTemplate,
    "qwen": QwenTemplate,
    "codestral": CodestralTemplate,
    "plain": PlainTemplate,
}


def template_for(tokenizer: Tokenizer, *, model_name: str = "", config: Any = None, override: str = "auto",
                 fim: bool | None = None) -> Template:
    """The template for a model: family from the tokenizer's special tokens (or ``override``),
    infilling from the model's name/config (or ``fim``). Raises TemplateError when an override
    names a family whose control tokens the tokenizer lacks."""
    override = (override or "auto").lower()
    if override == "auto":
        family = detect_family(tokenizer)
    elif override in _CLASSES:
        family = override
        markers = dict(_FAMILY_MARKERS).get(family, ())
        missing = [m for m in markers if tokenizer.token_id(m) is None]
        if missing:
            raise TemplateError(f"template = {override!r} needs the tokens {', '.join(missing)}, which this "
                                f"model's tokenizer lacks; set `template = \"auto\"`")
    else:
        raise TemplateError(f"unknown template {override!r}; expected auto or one of {', '.join(FAMILIES)}")

    infill = infills(family, model_name=model_name, config=config) if fim is None else bool(fim)
    if family == "plain":
        infill = False
    ids = tokenizer.token_id
    present = lambda *pieces: [i for i in (ids(p) for p in pieces) if i is not None]  # noqa: E731
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []

    if family == "codellama":
        is_70b = _is_70b(model_name, config)
        chat_format = "source" if is_70b and ids("<step>") is not None else "inst"
        # SPM first: Code Llama infills better suffix-first (paper, Table 6) and typing then re-uses the KV
        # cache. A checkpoint may say otherwise in config.json ("preferred_fim_mode").
        preferred = (config or {}).get("preferred_fim_mode") if isinstance(config, dict) else getattr(
            config, "preferred_fim_mode", None)
        return CodeLlamaTemplate(
            tokenizer, fim=infill, family=family, fim_modes=("psm", "spm") if preferred == "psm" else ("spm", "psm"),
            uses_bos=True,
            fim_stop_ids=present("▁<EOT>") + eos,
            chat_stop_ids=(present("<step>") + eos) if chat_format == "source" else list(eos),
            chat_format=chat_format,
        )
    if family == "starcoder2":
        repo = ids("<file_sep>") is not None
        stops = present("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<repo_name>")
        return StarCoder2Template(tokenizer, fim=infill, family=family, repo_format=repo, fim_modes=("psm",),
                                  uses_bos=False, fim_stop_ids=_unique(stops + eos),
                                  chat_stop_ids=_unique(present("<|im_end|>", "<|endoftext|>") + eos))
    if family == "deepseek":
        stops = present("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")
        return DeepSeekTemplate(tokenizer, fim=infill, family=family, fim_modes=("psm",), uses_bos=True,
                                fim_stop_ids=_unique(stops + eos),
                                chat_stop_ids=_unique(present("<|EOT|>", "<｜end▁of▁sentence｜>") + eos))
    if family == "qwen":
        repo = ids("<|repo_name|>") is not None and ids("<|file_sep|>") is not None
        stops = present("<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
                        "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>")
        return QwenTemplate(tokenizer, fim=infill, family=family, repo_format=repo, fim_modes=("psm",),
                            uses_bos=False, fim_stop_ids=_unique(stops + eos),
                            chat_stop_ids=_unique(present("<|im_end|>", "<|endoftext|>") + eos))
    if family == "codestral":
        return CodestralTemplate(tokenizer, fim=infill, family=family, fim_modes=("spm",), uses_bos=True,
                                 fim_stop_ids=_unique(eos + present("[PREFIX]", "[SUFFIX]", "[MIDDLE]")),
                                 chat_stop_ids=list(eos))
    return PlainTemplate(tokenizer, fim=False, family="plain", fim_modes=(), uses_bos=tokenizer.adds_bos(),
                         fim_stop_ids=list(eos), chat_stop_ids=list(eos))


def _unique(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))
