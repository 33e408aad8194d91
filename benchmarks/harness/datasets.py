"""Where a benchmark dataset's atomic files are, and truncated copies of it for ``--max-users``."""

import os

import recbole

from benchmarks.harness.common import ROOT, default_cache_root, say


class DatasetMissing(Exception):
    pass


def find_dataset(name, data_path):
    """Folder holding ``<name>.inter``: ``<data_path>/<name>``, tests/data/<name>, or RecBole's bundled copy."""
    candidates = [os.path.join(data_path, name), os.path.join(ROOT, "tests", "data", name),
                  os.path.join(os.path.dirname(recbole.__file__), "dataset_example", name)]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, f"{name}.inter")):
            return os.path.abspath(folder)
    raise DatasetMissing(
        f"dataset '{name}' not found (looked for {name}.inter in: {', '.join(os.path.abspath(c) for c in candidates)});"
        f" pass --data-path=<folder containing {name}/>"
    )


def truncate_dataset(name, folder, max_users, work_root):
    """Copy of dataset ``name`` keeping the first ``max_users`` users (file order), as dataset ``<name>-u<N>``.

    The copy gets its own dataset name because RecBole always reads ``ml-100k`` from its bundled folder, whatever
    ``data_path`` says. ``.item`` / ``.user`` keep only the rows of the kept items / users; other files are linked.
    Returns ``(data_path, alias)``.
    """
    alias = f"{name}-u{max_users}"
    target = os.path.join(work_root, alias)
    inter = os.path.join(target, f"{alias}.inter")
    source_inter = os.path.join(folder, f"{name}.inter")
    stamp = f"{os.path.realpath(source_inter)}:{os.path.getsize(source_inter)}:{max_users}"
    stamp_file = os.path.join(target, ".source")
    if os.path.isfile(inter) and os.path.isfile(stamp_file) and open(stamp_file).read() == stamp:
        return work_root, alias
    os.makedirs(target, exist_ok=True)
    kept, n_rows = set(), 0
    tmp = inter + f".{os.getpid()}.tmp"
    with open(source_inter, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
        header = src.readline()
        dst.write(header)
        columns = [c.split(":")[0] for c in header.rstrip("\n").split("\t")]
        uid = columns.index("user_id")
        for line in src:
            user = line.split("\t", uid + 1)[uid]
            if user not in kept:
                if len(kept) >= max_users:
                    continue
                kept.add(user)
            dst.write(line)
            n_rows += 1
    os.replace(tmp, inter)
    items = _kept_items(inter)
    n_items = _filter_rows(os.path.join(folder, f"{name}.item"), os.path.join(target, f"{alias}.item"), "item_id",
                           items)
    _filter_rows(os.path.join(folder, f"{name}.user"), os.path.join(target, f"{alias}.user"), "user_id", kept)
    for entry in os.listdir(folder):
        if entry.startswith(name + ".") and not entry.endswith((".inter", ".item", ".user")):
            link = os.path.join(target, alias + entry[len(name):])
            if not os.path.lexists(link):
                os.symlink(os.path.join(folder, entry), link)
    with open(stamp_file, "w") as f:
        f.write(stamp)
    say(f"{name}: kept the first {len(kept)} users ({n_rows} interactions, {n_items} item rows) as {alias} "
        f"in {target}")
    return work_root, alias


def _kept_items(inter):
    with open(inter, encoding="utf-8") as f:
        columns = [c.split(":")[0] for c in f.readline().rstrip("\n").split("\t")]
        iid = columns.index("item_id")
        return {line.rstrip("\n").split("\t")[iid] for line in f}


def _filter_rows(source, target, field, keep):
    """Copy the lines of ``<dataset>.item`` / ``.user`` whose ``field`` is in ``keep`` (RecBole would otherwise keep
    every user of the user file, and encode the text of every item of the item file).

    Lines are copied byte for byte (the shipped atomic files hold one entity per line)."""
    if not os.path.isfile(source):
        return 0
    n = 0
    tmp = target + f".{os.getpid()}.tmp"
    with open(source, encoding="utf-8", newline="") as src, open(tmp, "w", encoding="utf-8", newline="") as dst:
        header = src.readline()
        dst.write(header)
        iid = [c.split(":")[0] for c in header.rstrip("\r\n").split("\t")].index(field)
        for line in src:
            if line.rstrip("\r\n").split("\t", iid + 1)[iid] in keep:
                dst.write(line)
                n += 1
    os.replace(tmp, target)
    return n


def resolve_datasets(preset, args):
    """``{name: {"data_path", "cache_dir", "max_users", "error"}}`` for the preset's datasets."""
    wanted = preset["datasets"]
    if args.datasets:
        wanted = {name: wanted.get(name, {"max_users": None}) for name in args.datasets.split(",")}
    resolved = {}
    for name, spec in wanted.items():
        max_users = args.max_users if args.max_users is not None else spec.get("max_users")
        entry = {"max_users": max_users, "data_path": None, "cache_dir": None, "error": None, "recbole_name": name,
                 "config_files": []}
        # the dataset yaml files RecBole and the plugin load by dataset name: passed explicitly to a renamed copy
        yaml_files = [os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", f"{name}.yaml"),
                      os.path.join(ROOT, "properties", "dataset", f"{name}.yaml")]
        try:
            folder = find_dataset(name, args.data_path)
            if max_users:
                entry["data_path"], entry["recbole_name"] = truncate_dataset(
                    name, folder, max_users, os.path.join(default_cache_root(), "bench-data"))
                entry["cache_dir"] = args.cache_dir
                entry["config_files"] = [f for f in yaml_files if os.path.isfile(f)]
            else:
                entry["data_path"] = os.path.dirname(folder)
                entry["cache_dir"] = args.cache_dir
        except DatasetMissing as err:
            entry["error"] = str(err)
            say(f"SKIP {name}: {err}")
        resolved[name] = entry
    return resolved
