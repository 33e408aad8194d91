"""RecBole ``Config`` that knows the plugin's models and layers the plugin's yaml files.

Following RecBole-GNN, only ``_get_model_and_dataset`` and ``_load_internal_config_dict`` are
overridden. The plugin's yaml (``properties/``) is layered after RecBole's own defaults and
before everything the user passes (config files, config dict, command line), in this order:

1. ``properties/overall.yaml``                 plugin-wide defaults (text encoder, semantic IDs, ...)
2. ``properties/quick_start/sequential.yaml``  sequential models with ``loss_type: CE`` (no negatives)
3. ``properties/model/<Model>.yaml``           the model's hyperparameters, after the yaml of every ancestor
                                               model class (DiscRec and PRORec layer ``TIGER.yaml`` first, so
                                               their yaml states only what differs from TIGER)
4. ``properties/dataset/<dataset>.yaml``       fields and protocol of a shipped dataset
5. ``properties/quick_start/<Model>-<dataset>.yaml``  a preset for one model on one dataset, after the preset of
                                               every ancestor model class (``DiscRec-ml-100k.yaml`` inherits
                                               ``TIGER-ml-100k.yaml``'s recipe and states only what makes DiscRec)

A stock RecBole model keeps RecBole's defaults: where one of these files changes a value RecBole's own yaml set
for it (``sequential.yaml`` on SASRec's negative sampling), ``Config.genrec_changed_defaults`` names the key, both
values and the file, and every run logs it.
"""

import ast
import os

from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_genrec.utils import get_model, properties_dir


def model_yaml_chain(model, model_class):
    """Names whose ``properties/model/<name>.yaml`` hold the model's defaults, base class first, ``model`` last.

    Every class of ``model_class``'s MRO that has a plugin yaml contributes (``PRORec`` -> ``["TIGER", "PRORec"]``),
    so a subclass yaml states only what differs from its ancestors'.
    """
    root = properties_dir()
    ancestors = [cls.__name__ for cls in reversed(model_class.__mro__[1:])]
    return [name for name in ancestors if os.path.isfile(os.path.join(root, "model", f"{name}.yaml"))] + [model]


def is_plugin_model(model_class):
    return model_class.__module__.split(".")[0] == "recbole_genrec"


class Config(RecBoleConfig):
    def _convert_config_dict(self, config_dict):
        """RecBole ``eval``s every string of a config dict and of ``--key=value``; here only Python literals are
        read (``ast.literal_eval``: ``'[1, 2]'``, ``'1e-3'``, ``'True'``), so no setting can run code."""
        for key, param in config_dict.items():
            if not isinstance(param, str):
                continue
            try:
                value = ast.literal_eval(param)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                value = {"true": True, "false": False}.get(param.lower(), param)
            if value is not None and not isinstance(value, (str, int, float, list, tuple, dict, bool)):
                value = param  # a set, bytes or complex literal stays the text it was
            config_dict[key] = value
        return config_dict

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError(
                    "No model given: pass --model=<Name> (see --list-models), a `model:` key in a "
                    "config file, or model=... in Python."
                )
        if isinstance(model, str):
            final_model, final_model_class = model, get_model(model)
        else:
            final_model, final_model_class = model.__name__, model
        final_dataset = dataset if dataset is not None else self.external_config_dict.get("dataset")
        if final_dataset is None:
            raise KeyError(
                "No dataset given: pass --dataset=<name> (e.g. ml-100k), a `dataset:` key in a "
                "config file, or dataset=... in Python."
            )
        return final_model, final_model_class, final_dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        recbole_sampling = self.internal_config_dict.get("train_neg_sample_args")  # RecBole's yaml value
        root = properties_dir()
        sequential = model_class.type == ModelType.SEQUENTIAL
        user_sets_sampling = "train_neg_sample_args" in self.external_config_dict
        files = [os.path.join(root, "overall.yaml")]
        if sequential and not user_sets_sampling:
            files.append(os.path.join(root, "quick_start", "sequential.yaml"))
        chain = model_yaml_chain(model, model_class)
        files += [os.path.join(root, "model", f"{name}.yaml") for name in chain]
        files.append(os.path.join(root, "dataset", f"{dataset}.yaml"))
        files += [os.path.join(root, "quick_start", f"{name}-{dataset}.yaml") for name in chain]
        stock = not is_plugin_model(model_class)
        recbole_defaults = dict(self.internal_config_dict) if stock else {}  # RecBole's own yaml for this model
        self.genrec_changed_defaults = []  # [(key, RecBole's value, the plugin's, file)] of a stock model
        for file in files:
            if os.path.isfile(file):
                config_dict = self._update_internal_config_dict(file)
                self.genrec_changed_defaults += [
                    (key, recbole_defaults[key], value, os.path.relpath(file, os.path.dirname(root)))
                    for key, value in config_dict.items() if key in recbole_defaults and recbole_defaults[key] != value
                ]
                if "dataset" + os.sep in file:
                    self.parameters["Dataset"] += [
                        key for key in config_dict if key not in self.parameters["Dataset"]
                    ]
        if "text_fields" in self.external_config_dict and "text_template" not in self.external_config_dict:
            self.internal_config_dict["text_template"] = None  # the user's text_fields beat a yaml's template
        from recbole_genrec.validation import check_unknown_keys

        allow = self.external_config_dict.get("allow_unknown_keys", self.internal_config_dict["allow_unknown_keys"])
        chosen = {**self.file_config_dict, **self.variable_config_dict}  # config files and config_dict
        check_unknown_keys(chosen, extra_known=self.internal_config_dict, allow=allow)
        # RecBole also reads every --key=value of the host program's sys.argv (pytest's, a notebook's): warn only
        check_unknown_keys([k for k in self.cmd_config_dict if k not in chosen], extra_known=self.internal_config_dict,
                           allow=True)
        loss = self.external_config_dict.get("loss_type", self.internal_config_dict.get("loss_type"))
        if sequential and not user_sets_sampling and loss not in (None, "CE"):
            # A sequential model trained with BPR needs RecBole's sampler back.
            self.internal_config_dict["train_neg_sample_args"] = recbole_sampling
        self.genrec_changed_defaults = [  # the user's own value, or RecBole's restored, is no change of the plugin
            (key, recbole, value, file) for key, recbole, value, file in self.genrec_changed_defaults
            if key not in self.external_config_dict and self.internal_config_dict[key] == value
        ]
