"""The GPT: causal, the KV cache changes nothing but speed, padding and positions are
handled, weights round-trip through safetensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from foundry.config.schema import GPTConfig
from foundry.models.gpt import GPT, ROPE_BASE, KVCache, Rotary, batched_matmul, rotate
from foundry.registry.package import write_package

POSITIONS = ["rope", "learned"]


def tiny_gpt(positions: str = "rope", **overrides) -> GPT:
    values = dict(
        n_layers=2,
        d_model=32,
        n_heads=4,
        context_length=48,
        positions=positions,
        dropout=0.0,
        vocab_size=97,
    )
    values.update(overrides)
    torch.manual_seed(0)
    return GPT(GPTConfig(**values), vocab_size=97).eval()


@pytest.mark.parametrize("positions", POSITIONS)
def test_kv_cache_gives_the_logits_of_a_full_recompute(positions):
    model = tiny_gpt(positions)
    ids = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)  # [3, 20, 97]
        cache = KVCache()
        pieces = [model(ids[:, :12], cache=cache)]  # a prompt, then one token at a time
        pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(12, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_future_tokens_do_not_change_past_logits(positions):
    model = tiny_gpt(positions)
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("positions", POSITIONS)
def test_left_padding_with_mask_and_positions_gives_the_unpadded_logits(positions):
    model = tiny_gpt(positions)
    ids = torch.randint(0, 97, (1, 7), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.int64), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 7)], dim=1).long()
    positions_ids = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = model(ids)
        cache = KVCache()
        out = model(padded, attention_mask=mask, position_ids=positions_ids, cache=cache)
        # and one cached step after it
        nxt = torch.tensor([[5]])
        step = model(
            nxt,
            attention_mask=torch.cat([mask, torch.ones(1, 1).long()], dim=1),
            position_ids=torch.tensor([[7]]),
            cache=cache,
        )
        alone_next = model(torch.cat([ids, nxt], dim=1))[:, -1:]
    assert torch.isfinite(out).all()  # padding rows attend to themselves: no NaN
    torch.testing.assert_close(out[:, 5:], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step, alone_next, rtol=1e-4, atol=1e-5)


def test_step_follows_the_engine_contract():
    model = tiny_gpt()
    ids = torch.randint(0, 97, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.int64)
    logits, cache = model.step(
        ids, cache=None, attention_mask=mask, position_ids=torch.arange(6)[None].repeat(2, 1)
    )
    assert logits.shape == (2, 1, 97) and isinstance(cache, KVCache) and cache.length == 6
    logits, cache = model.step(
        ids, cache=None, attention_mask=mask, position_ids=torch.arange(6)[None], use_cache=False
    )
    assert cache is None


def test_tied_embeddings_share_one_matrix_and_survive_a_package(tmp_path):
    tied, untied = tiny_gpt(tie_embeddings=True), tiny_gpt(tie_embeddings=False)
    assert tied.head.weight is tied.embed.weight
    assert untied.head.weight is not untied.embed.weight
    assert tied.num_parameters() == untied.num_parameters() - 97 * 32

    write_package(tmp_path / "pkg", weights=tied.state_dict(), manifest={}, metrics={}, card="")
    restored = GPT(tied.config, vocab_size=97)
    restored.load_state_dict(load_file(tmp_path / "pkg" / "model.safetensors"))
    assert restored.head.weight is restored.embed.weight  # still tied after loading
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(ids), tied(ids))


def test_rope_tables_are_not_weights():
    keys = tiny_gpt("rope").state_dict()
    assert not any("cos" in k or "sin" in k for k in keys)
    assert "pos_embed.weight" in tiny_gpt("learned").state_dict()


def test_rotary_is_the_rotation_of_the_halves_bit_for_bit():
    """`rotate` computes x * [cos, cos] + [x2, x1] * [-sin, sin]; it must give exactly
    the "rotate half" formula (GPT-NeoX, Llama), on a strided view as the attention
    hands it, so that no token changes."""
    dim, positions = 8, torch.tensor([[0, 3, 5], [7, 1, 2]])
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, dim, 2).float() / dim)
    angles = positions[..., None].float() * inv_freq  # [B, t, Dh/2]
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]  # [B, 1, t, Dh/2]
    x = torch.randn(2, 3, 2 * 4, dim).view(2, 3, 2, 4, dim).permute(2, 0, 3, 1, 4)
    x1, x2 = x.chunk(2, dim=-1)
    expected = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    got = rotate(x, Rotary(dim, 8)(positions))
    assert torch.equal(got, expected)
    assert got.is_contiguous()


def test_batched_matmul_is_matmul_bit_for_bit():
    buffer = torch.randn(5, 4, 11, 8)  # a cache: rows, heads, positions, head dim
    q, keys = torch.randn(3, 4, 2, 8), buffer[:3]
    assert torch.equal(batched_matmul(q, keys.transpose(-2, -1)), q @ keys.transpose(-2, -1))
    weights = torch.randn(3, 4, 2, 11)
    assert torch.equal(batched_matmul(weights, keys), weights @ keys)


def test_too_long_an_input_is_refused():
    model = tiny_gpt(context_length=8)
    with pytest.raises(ValueError, match="context_length 8"):
        model(torch.zeros(1, 9, dtype=torch.int64))


def test_dropout_only_in_training():
    model = tiny_gpt(dropout=0.5)
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), model(ids))
        model.train()
        assert not torch.allclose(model(ids), model(ids))


def test_config_rejects_odd_rope_heads():
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(d_model=24, n_heads=8, positions="rope")


def test_kv_cache_grows_past_its_first_capacity():
    model = tiny_gpt(context_length=160)
    ids = torch.randint(0, 97, (2, 150), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache()  # the first pass reserves room for 64 tokens; 150 need two doublings
        pieces = [model(ids[:, :3], cache=cache)]
        pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(3, 150)]
    assert cache.length == 150
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_package_weights_store_a_tied_head_once_and_load_back(tie):
    config = GPTConfig(n_layers=1, d_model=16, n_heads=2, context_length=16, tie_embeddings=tie)
    torch.manual_seed(0)
    model = GPT(config, vocab_size=40)
    saved = model.package_weights(model.state_dict())
    assert ("head.weight" in saved) is not tie
    torch.manual_seed(1)
    again = GPT(config, vocab_size=40)
    again.load_package_weights(saved)
    assert again.tied is tie
    ids = torch.randint(0, 40, (2, 8))
    torch.testing.assert_close(again.eval()(ids), model.eval()(ids))
    with pytest.raises(RuntimeError):
        again.load_package_weights({k: v for k, v in saved.items() if k != "ln_f.weight"})
