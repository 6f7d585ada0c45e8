"""The command line around Hydra: a user's ``--help`` page, and checks of the overrides
before Hydra composes them.

Hydra reports an unknown option or key with exit 1 and no "did you mean", lists the schema
nodes among the options, and lets ``+group.key=`` add a key that the schema does not have
(the run then dies much later inside peft). These checks name the closest valid option or
key, in one paragraph, with exit 2, before anything is composed, written or loaded.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from ptexp.errors import ConfigError, closest
from ptexp.experiment import DEFAULT_METHOD
from ptexp.schema import GROUP_SCHEMAS, RunConfig

CONF_DIR = Path(__file__).resolve().parent / "conf"
#: Config groups a user picks from, in the order the help page shows them.
USER_GROUPS = (
    "model",
    "dataset",
    "method",
    "prompt_encoder",
    "trainer",
    "logger",
    "experiment",
    "sweep",
    "hparams_search",
)


def group_options(group: str) -> list[str]:
    """A group's options: the YAML files of its folder and its subfolders (``study/sms_spam``);
    the schema nodes are not options."""
    return _yaml_options(CONF_DIR / group)


def _yaml_options(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def _fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema) if not f.name.startswith("_")}


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a value parsed from the command line fits a schema field's type. A string that
    OmegaConf converts ('64' for an int) or resolves (``${oc.env:SEED}``) is left to Hydra."""
    if isinstance(value, str) and ("${" in value or _number(value)):
        return True
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"Any": Any})  # the schema uses PEP 563 strings
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if origin in (list, dict) or annotation in (list, dict):
        return isinstance(value, origin or annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return not isinstance(value, (list, dict))
    return True


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _values(override: Any) -> list[Any]:
    from hydra.errors import HydraException

    if not override.is_sweep_override():
        return [override.value()]
    try:
        return list(override.sweep_iterator()) if override.is_discrete_sweep() else []
    except HydraException:  # glob(*) needs Hydra's config loader: Hydra checks it
        return []


def method_schema(name: str) -> type:
    from ptexp.methods import get_method

    return get_method(name).schema


def method_uses_prompt_encoder(name: str) -> bool:
    from ptexp.methods import get_method

    return get_method(name).uses_prompt_encoder


def _chosen_method(parsed: list[Any]) -> str | None:
    """The method the command line picks (the default when it picks none); None when it sweeps several."""
    for override in parsed:
        if override.key_or_group == "method":
            values = _values(override)
            return str(values[0]) if len(values) == 1 else None
    return DEFAULT_METHOD


#: Hydra's flags that take a value (the next argument is not an override).
_FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--info",
    "-i",
    "--experimental-rerun",
}


def _override_arguments(arguments: list[str]) -> list[str]:
    overrides, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument.startswith("-"):
            skip = argument in _FLAGS_WITH_VALUE
        else:
            overrides.append(argument)
    return overrides


def _chosen_trainer(parsed: list[Any]) -> str:
    for override in parsed:
        if override.key_or_group == "trainer" and not override.is_sweep_override():
            return str(override.value())
    return "default"


def _preset_keys(group: str, option: str) -> set[str]:
    """Keys an option's yaml sets, following its own defaults list (``gpu`` extends ``default``)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return set()
    node = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(node, dict)
    keys = {k for k in node if k != "defaults"}
    for parent in node.get("defaults", []):
        if isinstance(parent, str) and parent not in ("_self_", "schema"):
            keys |= _preset_keys(group, parent)
    return keys


def _check_trainer_key(key: str, preset: str) -> None:
    """``trainer.<key>=`` without a '+' changes a key the preset has; for any other key Hydra
    says only "append with +". A misspelt TrainingArguments field gets the closest names."""
    if key in _preset_keys("trainer", preset):
        return
    from ptexp.validate import PTEXP_TRAINER_KEYS, RENAMED_TRAINER_KEYS, _training_fields

    fields = _training_fields()
    if key in PTEXP_TRAINER_KEYS:
        raise ConfigError(
            f"trainer.{key} is a ptexp key that trainer={preset} does not set: add it with a '+', +trainer.{key}=..."
        )
    if key in fields:
        raise ConfigError(
            f"trainer.{key} is a TrainingArguments field that trainer={preset} does not set: add it with a '+', "
            f"+trainer.{key}=..."
        )
    if key in RENAMED_TRAINER_KEYS:
        raise ConfigError(
            f"trainer.{key} is not a TrainingArguments field in this transformers version; use "
            f"trainer.{RENAMED_TRAINER_KEYS[key]}."
        )
    raise ConfigError(
        f"trainer.{key} is not a transformers.TrainingArguments field; closest valid fields: {closest(key, fields)}."
    )


def check_overrides(arguments: list[str]) -> None:
    """Raise a ConfigError for an unknown group option, an unknown key of a closed schema
    (also with ``+``), or a value of the wrong type."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(a in ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn") for a in arguments):
        return  # another primary config or config folder: its groups and keys are Hydra's to check
    overrides = _override_arguments(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # Hydra's own message about the syntax is better than ours
    root_fields = _fields(RunConfig)
    # Extra config folders (hydra.searchpath=[file://...]) add options to the groups.
    searchpaths = [str(v) for o in parsed if o.key_or_group == "hydra.searchpath" for v in (o.value() or [])]
    for override in parsed:
        key = override.key_or_group
        if "/" in key or key.split(".")[0] == "hydra" or override.type.name == "DEL":
            continue
        head, _, rest = key.partition(".")
        if not rest and (CONF_DIR / key).is_dir():
            if any(not p.startswith("file://") for p in searchpaths):
                continue  # options in a package or another source: Hydra checks them
            extra = {o for s in searchpaths for o in _yaml_options(Path(s.removeprefix("file://")) / key)}
            options = sorted({*group_options(key), *extra})
            for value in _values(override):
                if value is not None and str(value) not in options:
                    near = closest(str(value), options)
                    raise ConfigError(
                        f"{key}={value} is not an option of the '{key}' group; closest: {near}. "
                        f"Options: {', '.join(options)}."
                    )
            continue
        if head == "method" and rest:
            chosen = _chosen_method(parsed)
            if chosen is None:
                continue  # several methods swept: each checks its own keys when its job runs
            schema, name, where = method_schema(chosen), rest.split(".")[0], f"method={chosen}"
            fields = _fields(schema)
        elif head == "trainer" and rest and override.type.name in ("CHANGE", "ADD"):
            if not any(o.key_or_group in ("experiment", "hparams_search") for o in parsed):
                # (a preset may pick its own trainer options: only Hydra knows them then)
                name, preset = rest.split(".")[0], _chosen_trainer(parsed)
                if override.type.name == "CHANGE":
                    _check_trainer_key(name, preset)
                elif name in _preset_keys("trainer", preset):
                    # Hydra's own message for this ends in a traceback hint and exit 1.
                    raise ConfigError(
                        f"+trainer.{name}: trainer={preset} sets trainer.{name} already, and a '+' only adds a "
                        f"key that is not there: drop the '+', trainer.{name}=..."
                    )
            continue
        elif head == "trainer" or head not in GROUP_SCHEMAS and rest:
            continue  # trainer is open: its keys are checked against TrainingArguments later
        else:
            schema, name = (GROUP_SCHEMAS[head], rest.split(".")[0]) if rest else (RunConfig, key)
            fields = _fields(schema) if rest else root_fields
            where = f"the '{head}' group" if rest else "the root config"
        if name not in fields:
            plus = ""
            if override.type.name != "CHANGE":
                plus = " A '+' cannot add it: the group's keys are fixed by its schema."
            if head == "method":
                if method_uses_prompt_encoder(chosen):
                    plus += " Its prompt encoder is configured by the prompt_encoder.* keys."
                plus += " Other methods' keys: ptexp-train --help."
            raise ConfigError(
                f"{key} is not a key of {where}; closest: {closest(name, fields)}.{plus} "
                f"Valid keys: {', '.join(fields)}."
            )
        field = fields[name]
        if rest.count(".") >= 1:
            continue  # inside a mapping field such as dataset.load_kwargs.delimiter
        for value in _values(override):
            if not _accepts(field.type, value):
                raise ConfigError(
                    f"{key}={value!r} has the wrong type: {key} takes {field.type} ({field.metadata.get('help', '')})."
                )


def help_page() -> str:
    """What ``ptexp-train --help`` prints: groups and their options, the main keys, commands."""
    lines = [
        "ptexp-train: P-tune a pretrained model from composable configs (Hydra).",
        "",
        "  ptexp-train [GROUP=OPTION ...] [KEY=VALUE ...]        one run",
        "  ptexp-train -m KEY=V1,V2 ... | +sweep=PRESET          a sweep (one job per combination)",
        "  ptexp-train -m +sweep=PRESET hydra.sweeper.plan=true  plan a sweep: count, finished, estimate",
        "  ptexp-train --cfg job [overrides]                     print the composed config, run nothing",
        "  ptexp-predict RUN_DIR EXAMPLE ... | --file F          classify (pairs: first<TAB>second)",
        "  ptexp-report SWEEP_OR_RUNS_DIR                        ablation table and figures",
        "",
        "Groups (GROUP=OPTION; sweep presets take a '+': +sweep=tokens_x_hidden):",
    ]
    lines += [f"  {group}: {', '.join(group_options(group))}" for group in USER_GROUPS]
    lines += ["  hydra/launcher: basic (default), parallel, slurm, slurm_ddp, slurm_local, submitit_debug", ""]
    lines.append("Keys (KEY=VALUE; trainer.* takes any transformers.TrainingArguments field):")
    keys = [(f"{g}.{f.name}", f) for g, schema in GROUP_SCHEMAS.items() for f in _fields(schema).values()]
    keys += [(f.name, f) for f in _fields(RunConfig).values() if f.name not in GROUP_SCHEMAS and f.name != "trainer"]
    width = max(len(k) for k, _ in keys)
    lines += [f"  {k:{width}s}  {f.metadata.get('help', '')}" for k, f in keys]
    from ptexp.validate import PTEXP_TRAINER_KEYS

    # A '+' only where trainer=default lacks the key: Hydra refuses to append a key that is there.
    default = _preset_keys("trainer", "default")
    lines += [
        f"  {('' if k in default else '+') + 'trainer.' + k:{width}s}  {h} (ptexp's own)"
        for k, h in PTEXP_TRAINER_KEYS.items()
    ]
    from ptexp.methods import all_methods

    lines += ["", "Method keys (method=<name> picks a method; its keys are method.<key>):"]
    for name, method in sorted(all_methods().items()):
        own = [f for f in _fields(method.schema).values() if f.name != "name"]
        keys = ", ".join(f"{f.name} ({f.metadata.get('help', '')})" for f in own)
        if method.uses_prompt_encoder:
            keys = ", ".join([k for k in (keys, "the prompt_encoder.* keys") if k])
        keys = keys or "none of its own"
        lines.append(f"  {name}: {keys}")
    lines += [
        "",
        "Outputs: outputs/runs/<date>/<time>_<overrides>/ (metrics.json, adapter/, run.json, train.log, wandb/);",
        "sweeps: outputs/multiruns/<sweep_name>/<swept values>/ and report/. On a shared machine set num_threads=1.",
        "Hydra's own options: ptexp-train --hydra-help.",
    ]
    return "\n".join(lines)
