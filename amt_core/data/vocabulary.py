"""Map the values of hospital metadata ("Thymoma, type B2", "IV contrast: yes", "SIEMENS") onto the study's
vocabularies (:mod:`amt_core.registry`: histology, contrast, vendor, sex).

A mapping is a YAML file, one section per column, each a dictionary from the value as written in the metadata
to the study's value::

    histology:
      "Thymoma, type B2": thymoma_B2
    contrast:
      "IV contrast: yes": venous
    vendor:
      "Canon Medical Systems": Canon

Values already in the vocabulary need no entry. With a mapping, every other value of those columns must be
mapped: the ones that are not are reported all at once with the rows they occur in. :func:`suggest_mapping`
writes a starting mapping from the values found, the obvious matches filled in (case, spacing and punctuation
ignored; known vendor names; WHO thymoma types; contrast words) and the rest left empty with a comment listing
the choices.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

from amt_core.registry import CONTRASTS, HISTOLOGIES, SEXES, VENDORS

#: the columns a mapping may translate, and their vocabularies
VOCABULARIES: dict[str, tuple[str, ...]] = {"histology": HISTOLOGIES, "contrast": CONTRASTS, "vendor": VENDORS,
                                            "sex": SEXES}  # fmt: skip


def load_mapping(path: str | os.PathLike) -> dict[str, dict[str, str | None]]:
    """The mapping in ``path``; every problem (unknown column, a target outside the vocabulary) at once."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: mapping file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a readable YAML mapping: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a mapping must be a dictionary of columns ({', '.join(VOCABULARIES)})")
    problems, mapping = [], {}
    for column, entries in data.items():
        if column not in VOCABULARIES:
            problems.append(f"unknown column {column!r} (mappable: {', '.join(VOCABULARIES)})")
            continue
        if entries is None:
            entries = {}
        if not isinstance(entries, dict):
            problems.append(f"{column}: expected a dictionary 'value as written: study value'")
            continue
        mapping[column] = {}
        for source, target in entries.items():
            target = None if target is None or str(target).strip() == "" else str(target).strip()
            if target is not None and target not in VOCABULARIES[column]:
                problems.append(
                    f"{column}: {str(source)!r} is mapped to {target!r}, which is not one of "
                    f"{', '.join(VOCABULARIES[column])}"
                )
            mapping[column][str(source).strip()] = target
    if problems:
        raise ValueError(f"{p}: " + "; ".join(problems))
    return mapping


def apply_mapping(
    meta: pd.DataFrame, mapping: dict[str, dict[str, str | None]]
) -> tuple[pd.DataFrame, list[str]]:
    """``meta`` with the mapped columns translated, and the problems: each value that is neither in its
    vocabulary nor mapped, with the rows (as in the CSV: header = row 1) it occurs in."""
    meta = meta.copy()
    problems = []
    for column, vocabulary in VOCABULARIES.items():
        if column not in meta.columns:
            continue
        table = mapping.get(column, {})
        unmapped: dict[str, list[int]] = {}
        values = []
        for i, value in meta[column].items():
            text = (
                None
                if value is None or (not isinstance(value, str) and pd.isna(value))
                else str(value).strip()
            )
            if not text or text in vocabulary:
                values.append(text or None)
            elif table.get(text) is not None:
                values.append(table[text])
            else:
                unmapped.setdefault(text, []).append(int(i) + 2)
                values.append(text)
        meta[column] = pd.Series(values, index=meta.index, dtype=object)
        for text, rows in unmapped.items():
            shown = ", ".join(str(r) for r in rows[:10]) + (
                f" and {len(rows) - 10} more" if len(rows) > 10 else ""
            )
            problems.append(
                f"{column} {text!r} (row{'s' if len(rows) > 1 else ''} {shown}) has no mapping "
                f"(to one of {', '.join(vocabulary)})"
            )
    return meta, problems


def suggest(column: str, value: str) -> str | None:
    """The obvious study value for ``value`` of ``column``, or None when there is no obvious one."""
    from amt_core.data.privacy import vendor_name

    vocabulary = VOCABULARIES[column]
    words = re.sub(r"[\W_]+", " ", value).strip().casefold()
    for v in vocabulary:
        if words == re.sub(r"[\W_]+", " ", v).strip().casefold():
            return v
    if column == "vendor":
        name = vendor_name(value)
        return name if name in vocabulary else None
    if column == "sex":
        return {"male": "M", "man": "M", "female": "F", "woman": "F"}.get(words)
    if column == "histology":
        rest = "".join(w for w in words.split() if w not in ("thymoma", "type", "who"))
        if "thymoma" in words.split() and rest in ("a", "ab", "b1", "b2", "b3"):
            return f"thymoma_{rest.upper()}"
        for needle, target in (
            ("thymic carcinoma", "thymic_carcinoma"),
            ("lymphoma", "lymphoma"),
            ("germ cell", "germ_cell_tumour"),
            ("thymic cyst", "thymic_cyst"),
        ):
            if needle in words:
                return target
        return None
    if column == "contrast":
        if re.search(r"\b(no|none|non|without|plain|unenhanced|native)\b", words):
            return "none"
        if "arterial" in words:
            return "arterial"
        if re.search(r"\b(venous|portal|portovenous)\b", words):
            return "venous"
    return None


def suggest_mapping(meta: pd.DataFrame) -> str:
    """A starting mapping (YAML text) for the values of ``meta`` outside the vocabularies."""
    lines = [
        "# amt import --mapping: the metadata's values (left) -> the study's values (right).",
        "# Fill in every empty value, or correct a filled one; values already in the vocabulary need no entry.",
    ]
    for column, vocabulary in VOCABULARIES.items():
        if column not in meta.columns:
            continue
        found = sorted({str(v).strip() for v in meta[column].dropna() if str(v).strip()} - set(vocabulary))
        if not found:
            continue
        lines.append(f"{column}:  # one of: {', '.join(vocabulary)}")
        for value in found:
            guess = suggest(column, value)
            key = json.dumps(value, ensure_ascii=False)  # a double-quoted YAML scalar
            if guess is None:
                lines.append(f'  {key}: ""  # TODO: no obvious match')
            else:
                lines.append(f"  {key}: {guess}")
    return "\n".join(lines) + "\n"
