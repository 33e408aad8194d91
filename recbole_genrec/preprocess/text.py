"""Item text assembly from a RecBole ``.item`` atomic file.

The file is read with pandas directly (all cells as strings), so text is never split into
RecBole tokens. Multi-valued categorical fields (``categories``, ``class``, ...) store one token
per value with ``_`` in place of spaces; they become ``"Skin Care, Face"``.

Text of one item: ``text_template`` (``"{title}. Brand: {brand}."``) when set, else the
``text_fields`` values (one field: its value; several: ``"name: value. name: value"``).
"""

import csv
import logging
import os
import string

import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_FIELD_CANDIDATES = ("title", "movie_title", "name")
CATEGORY_FIELDS = ("categories", "category", "class", "genre", "genres", "tags")


def item_file_path(config, data_path=None):
    """``<data_path>/<dataset>.item``."""
    folder = data_path or config["data_path"]
    return os.path.join(folder, f"{config['dataset']}.item")


def read_item_table(config, data_path=None):
    """Read the ``.item`` file as strings.

    Returns ``(table, field_types)``: a DataFrame with plain field names as columns (missing
    cells are ``""``) and ``{field: "token" | "token_seq" | "float" | "float_seq"}``.
    Raises ``FileNotFoundError`` naming the path looked for.
    """
    path = item_file_path(config, data_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Item text needs the item atomic file, but {os.path.abspath(path)} does not exist. "
            f"Models with genrec_features need a '{config['dataset']}.item' file with text fields "
            f"(e.g. title:token_seq) next to '{config['dataset']}.inter'."
        )
    table = pd.read_csv(
        path,
        sep=config["field_separator"],
        quoting=csv.QUOTE_NONE,
        dtype=str,
        keep_default_na=False,
        encoding=config["encoding"],
        engine="c",
    )
    field_types = {}
    columns = []
    for header in table.columns:
        name, _, ftype = str(header).partition(":")
        field_types[name] = ftype or "token"
        columns.append(name)
    table.columns = columns
    return table, field_types


def resolve_text_spec(config, field_types):
    """The fields and template used for item text: ``(fields, template or None)``.

    ``text_template`` wins over ``text_fields``; without either, the first existing of
    title / movie_title / name is used. Raises ``ValueError`` naming the existing fields when a
    requested field is not in the item file.
    """
    template = config["text_template"]
    if template:
        fields = _template_fields(template)
        source = f"text_template {template!r}"
    else:
        fields = config["text_fields"]
        if isinstance(fields, str):
            fields = [fields]
        source = f"text_fields {fields}"
        if not fields:
            fields = [f for f in DEFAULT_FIELD_CANDIDATES if f in field_types][:1]
            source = "the default text field"
    fields = list(fields)
    available = [f for f in field_types if f != config["ITEM_ID_FIELD"]]
    missing = [f for f in fields if f not in field_types]
    if missing or not fields:
        wanted = f"{source} uses {missing}, which" if missing else f"{source} found nothing: no title/movie_title/name field"
        raise ValueError(
            f"{wanted} {'is' if len(missing) == 1 else 'are'} not in the item file of '{config['dataset']}'. "
            f"Fields that exist: {available}. Set e.g. `text_fields: [{', '.join(available[:2])}]` "
            f"(or a `text_template` using those names) in a config file or on the command line."
        )
    return fields, (template or None)


def _template_fields(template):
    """Placeholder names of a ``str.format`` template, in order of first use."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ValueError(f"text_template {template!r} has an unnamed or invalid placeholder {{{name}}}")
        if name not in names:
            names.append(name)
    return names


def clean_value(value, field, ftype, seq_separator=" "):
    """Human-readable text of one cell."""
    value = str(value).strip()
    if not value:
        return ""
    if ftype == "token_seq" and field.lower() in CATEGORY_FIELDS:
        parts = [p.replace("_", " ").strip() for p in value.split(seq_separator or " ")]
        return ", ".join(p for p in parts if p)
    if ftype == "float":
        try:
            number = float(value)
        except ValueError:
            return value
        return str(int(number)) if number.is_integer() else value
    return value


def _join_fields(values, fields):
    if len(fields) == 1:
        return values[fields[0]]
    return ". ".join(f"{f.replace('_', ' ')}: {values[f]}" for f in fields if values[f])


def item_texts(config, item_tokens, data_path=None):
    """Texts for ``item_tokens`` (in that order) from the item file.

    Items that are absent from the file, or whose text fields are all empty, get the fallback
    text ``"item <token>"`` (counted and logged). Returns ``(texts, spec)`` where ``spec`` is
    ``{"fields": [...], "template": str|None, "n_fallback": int}``.
    """
    table, field_types = read_item_table(config, data_path)
    fields, template = resolve_text_spec(config, field_types)
    iid = config["ITEM_ID_FIELD"]
    if iid not in table.columns:
        raise ValueError(f"item file of '{config['dataset']}' has no ITEM_ID_FIELD column '{iid}'")
    seq_sep = config["seq_separator"]
    table = table.drop_duplicates(subset=iid, keep="first").set_index(iid)
    cleaned = {f: [clean_value(v, f, field_types[f], seq_sep) for v in table[f].tolist()] for f in fields}
    row_of = {token: i for i, token in enumerate(table.index.tolist())}
    texts, n_fallback = [], 0
    for token in item_tokens:
        row = row_of.get(token)
        values = {f: cleaned[f][row] for f in fields} if row is not None else None
        if values is None or not any(values.values()):
            texts.append(f"item {token}")
            n_fallback += 1
        elif template:
            texts.append(template.format_map(values).strip())
        else:
            texts.append(_join_fields(values, fields))
    if n_fallback:
        logger.warning(
            f"{n_fallback} of {len(texts)} items have no text in {fields} (or no row in the item file); "
            f"they use the fallback text 'item <token>'"
        )
    return texts, {"fields": fields, "template": template, "n_fallback": n_fallback}
