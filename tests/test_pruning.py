"""Pruning methods: exact counts, nesting, whole channels, determinism, and an oracle
against torch.nn.utils.prune on the same weights."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as tprune

from trainers.config import PruneConfig
from trainers.models.base import ChannelGroup, PrunableModel
from trainers.pruning import PRUNING_METHODS, STRUCTURED_METHODS, compute_mask, layer_targets


class TinyMLP(PrunableModel):
    output_weight = "fc3.weight"

    def __init__(self, seed: int = 0, widths=(12, 10)):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(8, widths[0])
        self.fc2 = nn.Linear(widths[0], widths[1])
        self.fc3 = nn.Linear(widths[1], 3)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    def channel_groups(self):
        return [
            ChannelGroup("fc1.weight", bias="fc1.bias", consumers=(("fc2.weight", 1),)),
            ChannelGroup("fc2.weight", bias="fc2.bias", consumers=(("fc3.weight", 1),)),
        ]


class TinyCNN(PrunableModel):
    """conv-BN-relu x2 then flatten (4 positions per channel) into a linear layer."""

    output_weight = "fc.weight"

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv1d(2, 6, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm1d(6)
        self.c2 = nn.Conv1d(6, 5, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm1d(5)
        self.fc = nn.Linear(5 * 4, 3)
        with torch.no_grad():  # non-trivial BN parameters and stats
            for bn in (self.b1, self.b2):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):  # x: [N, 2, 8]
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.max_pool1d(torch.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))

    def channel_groups(self):
        return [
            ChannelGroup("c1.weight", bn_weight="b1.weight", bn_bias="b1.bias", consumers=(("c2.weight", 1),)),
            ChannelGroup("c2.weight", bn_weight="b2.weight", bn_bias="b2.bias", consumers=(("fc.weight", 4),)),
        ]


def weights_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def perturbed(weights, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in weights.items()}


rates = st.floats(min_value=0.05, max_value=0.6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rate=rates, method=st.sampled_from(["magnitude_global", "magnitude_layerwise",
                                                                       "random_unstructured"]))
def test_unstructured_exact_counts_and_nesting(seed, rate, method):
    model = TinyMLP(seed)
    w = weights_of(model)
    cfg = PruneConfig(method=method, rate=rate, schedule="iterative")
    prev = None
    remaining = {n: w[n].numel() for n in model.prunable()}
    dense = dict(remaining)
    for level in (1, 2, 3):
        pruned = 1 - (1 - rate) ** level  # fraction of the dense count pruned in all by this level
        w_level = perturbed(w, seed + level)  # weights change between rounds, as after retraining
        try:
            m = compute_mask(model, w_level, cfg, level, prev, seed)
        except ValueError as e:
            # Global ranking may empty a small layer (fc3 has 30 weights): that must be refused,
            # naming the layer, and only when the global top-k really keeps none of it.
            assert method != "magnitude_layerwise", e
            layer = re.search(r"layer '([^']+)'", str(e)).group(1)
            alive = {n: (w_level[n].abs() if prev is None else w_level[n].abs() * prev[n]) for n in remaining}
            total = sum(dense.values())
            k = total - int(round(pruned * total))
            threshold = torch.cat([a[a > 0] for a in alive.values()]).topk(k).values.min()
            assert not bool((alive[layer] >= threshold).any()), e
            return
        assert set(m) == set(model.prunable())
        if method == "magnitude_global":
            total = sum(dense.values())
            assert sum(int(m[n].sum()) for n in m) == total - int(round(pruned * total))
        else:
            for n in m:  # layerwise counts (random uses magnitude_global's per-layer counts)
                if method == "magnitude_layerwise":
                    assert int(m[n].sum()) == dense[n] - int(round(pruned * dense[n]))
        if prev is not None:  # nested: nothing pruned comes back
            for n in m:
                assert not bool((m[n] & ~prev[n]).any())
        remaining = {n: int(m[n].sum()) for n in m}
        prev = m


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rate=st.floats(0.1, 0.5),
       method=st.sampled_from(["l1_structured", "random_structured"]), arch=st.sampled_from([TinyMLP, TinyCNN]))
def test_structured_masks_cover_whole_channels(seed, rate, method, arch):
    model = arch(seed)
    cfg = PruneConfig(structure="structured", method=method, rate=rate, schedule="iterative")
    prev = None
    w = weights_of(model)
    for level in (1, 2):
        m = compute_mask(model, perturbed(w, level), cfg, level, prev, seed)
        for g in model.channel_groups():
            rows = m[g.weight].flatten(1)
            dead = ~rows.any(1)
            # a channel is all in or all out: its row is either fully dead or untouched by its own pruning
            n_out = rows.shape[0]
            for name in (g.bias, g.bn_weight, g.bn_bias):
                if name is not None:
                    assert torch.equal(m[name], ~dead)
            for cname, width in g.consumers:
                cols = m[cname].reshape(m[cname].shape[0], n_out, width, -1)
                assert not bool(cols[:, dead].any())  # consumer slices of dead channels masked
            if prev is not None:
                prev_dead = ~prev[g.weight].flatten(1).any(1)
                assert bool(dead[prev_dead].all())  # nested
            # the kept count is the level's share of the dense channels, however many rounds led there
            assert int((~dead).sum()) == n_out - int(round((1 - (1 - rate) ** level) * n_out))
        prev = m


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), method=st.sampled_from(sorted(PRUNING_METHODS)))
def test_same_seed_same_mask(seed, method):
    structure = "structured" if method in STRUCTURED_METHODS else "unstructured"
    model = TinyCNN(0)
    cfg = PruneConfig(structure=structure, method=method, rate=0.3)
    a = compute_mask(model, weights_of(model), cfg, 1, None, seed)
    b = compute_mask(copy.deepcopy(model), weights_of(model), cfg, 1, None, seed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_seeds_differ_and_keep_magnitude_counts():
    model = TinyMLP(1)
    cfg = PruneConfig(method="random_unstructured", rate=0.5)
    a = compute_mask(model, weights_of(model), cfg, 1, None, seed=1)
    b = compute_mask(model, weights_of(model), cfg, 1, None, seed=2)
    mag = compute_mask(model, weights_of(model), PruneConfig(rate=0.5), 1, None, seed=1)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(int(a[k].sum()) == int(mag[k].sum()) for k in a)


def _torch_masks(model, weights, names, rate, rounds, global_):
    """torch.nn.utils.prune, each round told the whole number of weights to remove so that the level's
    count is ``dense - round((1 - (1-rate)**level) * dense)`` (our rounding rule, module docstring)."""
    m = copy.deepcopy(model)
    m.load_state_dict(weights)
    params = [(m.get_submodule(n.rpartition(".")[0]), "weight") for n in names]

    def amount(sizes, level):
        total = sum(sizes)
        before = total - round((1 - (1 - rate) ** (level - 1)) * total)
        return before - (total - round((1 - (1 - rate) ** level) * total))

    for level in range(1, rounds + 1):
        if global_:
            sizes = [getattr(mod, attr).numel() for mod, attr in params]
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount(sizes, level))
        else:
            for mod, attr in params:
                tprune.l1_unstructured(mod, attr, amount=amount([getattr(mod, attr).numel()], level))
    return {n: mod.weight_mask.bool() for n, (mod, _) in zip(names, params)}


@pytest.mark.parametrize("global_", [True, False])
@pytest.mark.parametrize("rate", [0.2, 0.55])
def test_oracle_matches_torch_prune(global_, rate):
    # Continuous random weights: ties have probability zero, so the masks must agree exactly.
    model = TinyCNN(3)
    w = weights_of(model)
    names = model.prunable()
    cfg = PruneConfig(method="magnitude_global" if global_ else "magnitude_layerwise", rate=rate)
    ours, prev = None, None
    for level in (1, 2):  # round 2: torch's PruningContainer prunes among what remains, as we do
        ours = compute_mask(model, w, cfg, level, prev, seed=0)
        prev = ours
    theirs = _torch_masks(model, w, names, rate, 2, global_)
    for n in names:
        assert torch.equal(ours[n], theirs[n]), n


def test_output_layer_alias_and_exclude():
    model = TinyMLP(0)
    cfg = PruneConfig(rate=0.2, layer_rates={"output": 0.1}, exclude=("fc1.weight",))
    t = layer_targets(model, cfg)
    assert t == {"fc2.weight": 0.2, "fc3.weight": 0.1}
    m = compute_mask(model, weights_of(model), cfg, 1, None, 0)
    assert bool(m["fc1.weight"].all())
    n3 = model.fc3.weight.numel()
    assert int(m["fc3.weight"].sum()) == n3 - round(0.1 * n3)  # own pool at its own rate


def test_oneshot_density_follows_level():
    model = TinyMLP(0)
    w = weights_of(model)
    for level in (1, 3):
        cfg = PruneConfig(rate=0.2, schedule="oneshot")
        m = compute_mask(model, w, cfg, level, previous_mask=None, seed=0)
        total = sum(v.numel() for v in m.values())
        keep_rate = 1 - (1 - 0.2) ** level
        assert sum(int(v.sum()) for v in m.values()) == total - round(keep_rate * total)


def test_bad_inputs_raise_clear_errors():
    model = TinyMLP(0)
    w = weights_of(model)
    with pytest.raises(ValueError, match="prune.method"):
        compute_mask(model, w, PruneConfig(method="nope"), 1, None, 0)
    with pytest.raises(ValueError, match="structure"):
        compute_mask(model, w, PruneConfig(method="l1_structured"), 1, None, 0)
    with pytest.raises(ValueError, match="layer_rates.*'fc9.weight'"):
        compute_mask(model, w, PruneConfig(layer_rates={"fc9.weight": 0.1}), 1, None, 0)
    with pytest.raises(ValueError, match="exclude"):
        compute_mask(model, w, PruneConfig(exclude=("nope",)), 1, None, 0)
    with pytest.raises(ValueError, match="every channel of layer 'fc2.weight'"):
        compute_mask(model, w, PruneConfig(structure="structured", method="l1_structured", rate=0.2,
                                           layer_rates={"fc2.weight": 1.0}), 1, None, 0)
    with pytest.raises(ValueError, match="every weight of layer 'fc3.weight'"):
        compute_mask(model, w, PruneConfig(method="magnitude_layerwise", layer_rates={"output": 1.0}), 1, None, 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rate=st.floats(0.05, 0.6), w1=st.integers(3, 300), w2=st.integers(3, 300),
       structure=st.sampled_from(["unstructured", "structured"]))
def test_oneshot_and_iterative_keep_equal_counts_at_every_level(seed, rate, w1, w2, structure):
    """Random layer sizes: at every level, one-shot and iterative keep the same number of weights per
    pool and, structured, the same number of neurons per layer (a function of the level only)."""
    model = TinyMLP(seed, widths=(w1, w2))
    method = "l1_structured" if structure == "structured" else "magnitude_global"
    cfgs = {s: PruneConfig(structure=structure, method=method, rate=rate, schedule=s) for s in ("oneshot", "iterative")}
    w, prev = weights_of(model), None
    groups = model.channel_groups() if structure == "structured" else []
    for level in range(1, 7):
        w_level = perturbed(w, seed + level)
        try:
            it = compute_mask(model, w_level, cfgs["iterative"], level, prev, seed)
            one = compute_mask(model, w_level, cfgs["oneshot"], level, None, seed)
        except ValueError as e:  # a level that would empty a layer is refused for both schedules alike
            assert "every" in str(e)
            return
        if structure == "structured":
            for g in groups:
                n = it[g.weight].shape[0]
                kept = {name: int(m[g.weight].flatten(1).any(1).sum()) for name, m in (("it", it), ("one", one))}
                assert kept["it"] == kept["one"] == n - round((1 - (1 - rate) ** level) * n), (level, g.weight)
            assert {k: int(v.sum()) for k, v in it.items()} == {k: int(v.sum()) for k, v in one.items()}
        else:  # one global pool: its count is the level's (the split over layers follows the weights)
            total = sum(v.numel() for v in it.values())
            expected = total - round((1 - (1 - rate) ** level) * total)
            assert sum(int(v.sum()) for v in it.values()) == sum(int(v.sum()) for v in one.values()) == expected
        prev = it
