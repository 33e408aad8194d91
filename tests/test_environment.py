"""The environments researchers have: transformers 4.4x and 5.x (generative/hf_compat.py) and CPU threading on a
shared machine (recbole_genrec/threads.py).

The version-dependent tests run against whatever transformers is installed; `.ci/run` runs the suite on the floor
(transformers 4.46.3) and on the newest release, so both spellings are exercised for real.
"""

import os

import pytest
import torch

from recbole_genrec import threads
from recbole_genrec.generative import hf_compat

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- transformers adapter
class _NewStack:
    def forward(self, inputs_embeds=None, cache=None, use_cache=None, **kwargs):
        pass


class _OldStack:
    def forward(self, inputs_embeds=None, past_key_values=None, use_cache=None):
        pass


class _NoCacheStack:
    def forward(self, inputs_embeds=None):
        pass


def test_decoder_cache_kwargs_follow_the_stacks_signature():
    marker = object()
    assert hf_compat.decoder_cache_kwargs(_NewStack(), marker) == {"cache": marker, "use_cache": True}
    assert hf_compat.decoder_cache_kwargs(_OldStack(), marker) == {"past_key_values": marker, "use_cache": True}
    assert hf_compat.decoder_cache_kwargs(_OldStack(), None) == {"past_key_values": None, "use_cache": False}
    with pytest.raises(TypeError, match="neither `cache` nor `past_key_values`"):
        hf_compat.decoder_cache_kwargs(_NoCacheStack(), marker)


def test_installed_t5_decoder_takes_the_chosen_argument():
    """The name chosen for the installed transformers is a real parameter of its T5Stack.forward."""
    import inspect

    from transformers.models.t5.modeling_t5 import T5Stack

    chosen = next(iter(hf_compat.decoder_cache_kwargs(T5Stack.__new__(T5Stack), None)))
    assert chosen in inspect.signature(T5Stack.forward).parameters


def test_cached_decoding_equals_decoding_the_whole_prefix():
    """T5Backbone.decode with the adapter's cache, one position at a time, gives the states of one uncached call on
    the whole prefix (the path that raised TypeError on transformers 4.x)."""
    from recbole_genrec.generative import T5Backbone

    torch.manual_seed(0)
    model = T5Backbone(vocab_size=20, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=2, num_heads=2, d_kv=8,
                       dropout_rate=0.0, feed_forward_proj="relu").eval()
    input_ids = torch.randint(3, 20, (3, 5))
    mask = torch.ones_like(input_ids)
    mask[0, :2] = 0
    prefix = torch.randint(3, 20, (3, 4))
    with torch.no_grad():
        encoder_hidden = model.encode(input_ids, mask)  # [3, 5, 16]
        full = model.decode(model.shared(prefix), encoder_hidden, mask)  # [3, 4, 16]
        cache = hf_compat.new_encoder_decoder_cache(model.t5.decoder)
        steps = [model.decode(model.shared(prefix[:, t : t + 1]), encoder_hidden, mask, cache=cache)[:, -1]
                 for t in range(prefix.size(1))]
    assert cache.get_seq_length() == prefix.size(1)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_decoder_output_scaling_reads_either_config_spelling():
    from types import SimpleNamespace

    assert hf_compat.scales_decoder_outputs(SimpleNamespace(scale_decoder_outputs=False, tie_word_embeddings=True)) \
        is False
    assert hf_compat.scales_decoder_outputs(SimpleNamespace(tie_word_embeddings=False)) is False  # 4.x
    assert hf_compat.scales_decoder_outputs(SimpleNamespace(tie_word_embeddings=True)) is True
    from transformers import T5Config

    assert hf_compat.scales_decoder_outputs(T5Config(vocab_size=10)) is True  # T5's default on both lines


def test_lm_logits_match_hugging_faces_head():
    """Our tied head (with the adapter's scaling rule) equals T5ForConditionalGeneration's own logits."""
    from recbole_genrec.generative import T5Backbone

    torch.manual_seed(1)
    model = T5Backbone(vocab_size=20, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8,
                       dropout_rate=0.0, feed_forward_proj="relu").eval()
    input_ids, labels = torch.randint(3, 20, (2, 6)), torch.randint(3, 20, (2, 3))
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        hf = model.t5(input_ids=input_ids, attention_mask=mask, labels=labels).logits  # [2, 3, 20]
        _, ours, _, _ = model.forward_loss(input_ids, mask, labels)
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-5)


def test_too_old_transformers_is_refused_with_the_fix():
    import re

    with pytest.raises(ImportError, match=rf"transformers>={re.escape(hf_compat.MIN_TRANSFORMERS)}, found 4\.0\.0.*pip"):
        hf_compat.check_transformers_version("4.0.0")
    hf_compat.check_transformers_version(hf_compat.MIN_TRANSFORMERS)
    hf_compat.check_transformers_version("5.0.0.dev0")


def test_declared_floor_is_the_adapters_floor():
    """pyproject.toml's transformers range starts where hf_compat says the tested floor is."""
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as handle:
        deps = tomllib.load(handle)["project"]["dependencies"]
    assert f"transformers>={hf_compat.MIN_TRANSFORMERS}" in [d.replace(" ", "") for d in deps]


# ----------------------------------------------------------------------------------------------------- threading
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_and_its_ancestors(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    _write(proc, "0::/user.slice/job\n")
    _write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    _write(root / "user.slice" / "cpu.max", "250000 100000\n")  # the parent's 2.5 CPUs apply to the child
    assert threads.cgroup_cpu_limit(str(root), str(proc)) == pytest.approx(2.5)
    _write(root / "user.slice" / "job" / "cpu.max", "50000 100000\n")  # the smallest limit wins
    assert threads.cgroup_cpu_limit(str(root), str(proc)) == pytest.approx(0.5)
    _write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    _write(root / "user.slice" / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(str(root), str(proc)) is None


def test_cgroup_path_outside_the_mount_is_clipped_to_its_root(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    _write(proc, "0::/../../elsewhere\n")
    _write(tmp_path / "elsewhere" / "cpu.max", "10000 100000\n")  # outside the mount: never read
    _write(root / "cpu.max", "300000 100000\n")
    assert threads.cgroup_cpu_limit(str(root), str(proc)) == pytest.approx(3.0)


def test_cgroup_v1_quota(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    _write(proc, "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(str(root), str(proc)) is None
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "150000\n")  # quota at the mount root (inside a container)
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(str(root), str(proc)) == pytest.approx(1.5)


def test_available_cpus_is_the_affinity_capped_by_the_quota(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    affinity = len(os.sched_getaffinity(0))
    _write(proc, "0::/\n")
    _write(root / "cpu.max", "max 100000\n")
    assert threads.available_cpus(str(root), str(proc)) == affinity
    _write(root / "cpu.max", "50000 100000\n")  # half a CPU still gets one thread
    assert threads.available_cpus(str(root), str(proc)) == 1
    _write(root / "cpu.max", f"{(affinity + 8) * 100000} 100000\n")  # a quota above the affinity changes nothing
    assert threads.available_cpus(str(root), str(proc)) == affinity
    assert threads.available_cpus(str(tmp_path / "none"), str(tmp_path / "none")) == affinity  # no cgroup files


def test_wait_policy_is_passive_unless_the_user_chose():
    env = {}
    assert threads.set_wait_policy(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for user in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(user)
        assert not threads.set_wait_policy(env) and env == user


@pytest.mark.slow
def test_package_import_sets_the_wait_policy_before_torch():
    """A fresh ``import recbole_genrec`` leaves OMP_WAIT_POLICY=PASSIVE in the environment that torch's OpenMP read,
    and a user's own policy alone."""
    import subprocess
    import sys

    code = "import os, recbole_genrec, torch; print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", str(threads.available_cpus())]
    env.update(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ACTIVE", "1"]


def test_configure_respects_the_users_choice(monkeypatch):
    saved = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cpus", lambda *a: 3)
    monkeypatch.setattr(threads, "state", {"threads": None, "source": None})
    try:
        assert threads.configure(environ={}) == 3 and torch.get_num_threads() == 3
        assert threads.state["source"] == "available CPUs"
        assert threads.configure({"cpu_threads": 2}, environ={}) == 2 and torch.get_num_threads() == 2
        assert threads.state["source"] == "cpu_threads"
        torch.set_num_threads(1)  # the user's own call after import is kept by a later configure()
        assert threads.configure(environ={}) == 1 and threads.state["source"] == "torch.set_num_threads"
        torch.set_num_threads(2)
        assert threads.configure({"cpu_threads": 3}, environ={"OMP_NUM_THREADS": "2"}) == 2  # the environment wins
        assert torch.get_num_threads() == 2 and threads.state["source"] == "OMP_NUM_THREADS"
        assert threads.configure({"cpu_threads": None}, environ={"OMP_NUM_THREADS": "2"}) == 2
        for bad in (0, -1, 1.5, "4", True):
            with pytest.raises(ValueError, match="cpu_threads must be a positive integer"):
                threads.configure({"cpu_threads": bad}, environ={})
    finally:
        torch.set_num_threads(saved)
