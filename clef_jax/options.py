"""The option grammar of `configs/*.py:OPTIONS` strings (big_vision style), one parser for all.

    "demo,simclr,lead=I,steps=10"  ->  {"demo": True, "method": "simclr", "lead": "I", "steps": 10}

Items are comma-separated. A bare item is a switch (`flags`, -> True) or a value of one of the
`choices` groups (`simclr` -> `method="simclr"`); `key=value` items are typed by `values` (and
checked against `choices` when the key names a group).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence


def split_items(arg: str | None) -> list[str]:
  """`" a, b=1,,"` -> `["a", "b=1"]`."""
  return [s.strip() for s in (arg or "").split(",") if s.strip()]


def parse_options(
  items: Iterable[str],
  *,
  flags: Sequence[str] = (),
  choices: Mapping[str, Sequence[str]] | None = None,
  values: Mapping[str, Callable[[str], object]] | None = None,
  what: str = "config",
) -> dict[str, object]:
  """Parses option items (see the module docstring).

  Args:
    items: the items (`split_items` of the option string).
    flags: bare switches.
    choices: group name -> its bare values (also allowed as `group=value`).
    values: key -> type of `key=value` options.
    what: the option kind named in error messages ("config", "eval").

  Raises:
    ValueError: one line naming the unknown option or bad value, and the valid ones.
  """
  choices, values = dict(choices or {}), dict(values or {})
  bare = list(flags) + [c for group in choices.values() for c in group]
  keys = ", ".join(k + "=" for k in values)
  options: dict[str, object] = {}
  for item in items:
    key, sep, value = (s.strip() for s in item.partition("="))
    if not sep:
      if key in flags:
        options[key] = True
        continue
      group = next((g for g, names in choices.items() if key in names), None)
      if group is None:
        raise ValueError(f"Unknown {what} option {key!r}; valid: {', '.join(bare)}, {keys}.")
      options[group] = key
      continue
    if key not in values:
      raise ValueError(f"Unknown {what} option {key}=...; valid: {keys}.")
    try:
      options[key] = values[key](value)
    except ValueError:
      raise ValueError(
        f"{what.capitalize()} option {key}={value!r} is not a valid "
        f"{getattr(values[key], '__name__', 'value')}."
      ) from None
  for group, names in choices.items():
    if group in options and options[group] not in names:
      raise ValueError(f"Unknown {group} {options[group]!r}; choose one of {', '.join(names)}.")
  return options
