"""A decoder-only transformer (GPT), small enough to read in one sitting.

    tokens [B, T] → token embedding (+ learned positions) → n_layers x Block → LayerNorm
                  → linear head (tied to the token embedding by default) → logits [B, T, V]

    Block: x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x))     (pre-LayerNorm)
    Attention: causal multi-head self-attention through PyTorch's scaled_dot_product_attention,
               rotary position embeddings on queries and keys when `positions: rope`
    MLP: Linear(d, 4d) → GELU → Linear(4d, d)

Generation reuses the keys and values of tokens already seen (`KVCache`): after the
prompt, each new token costs one position's work instead of the whole sequence's.
`GPT.step` is the generation engine's step function (see `foundry.lm.generate`).

This model is not in the tabular model registry: `build_model` maps an InputSchema of
table columns to `[batch, n_outputs]`, which is not what a language model does. The LM
family (`foundry.families.gpt`) builds it with `GPT(config, vocab_size)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from foundry.config.schema import GPTConfig

__all__ = ["GPT", "KVCache"]

ROPE_BASE = 10_000.0
"""Rotary frequency base (the value of the RoPE paper, GPT-NeoX and Llama 1/2)."""


class KVCache:
    """Keys and values of every layer for the tokens processed so far.

    Per layer, keys and values live in buffers [B, n_heads, capacity, head_dim] that
    double when full, so a new token is written in place instead of copying the whole
    cache (what `torch.cat` each step would do). `update` returns views of the filled
    part, [B, n_heads, T_seen, head_dim].
    """

    def __init__(self) -> None:
        self._keys: list[Tensor] = []
        self._values: list[Tensor] = []
        self._sizes: list[int] = []
        self.batch_invariant = False
        """Attend with plain matmul + softmax rather than scaled_dot_product_attention,
        whose CPU kernel splits the work by batch size and so gives a row different low
        bits alone and in a batch (the continuous-batching engine sets it)."""

    @classmethod
    def from_tensors(cls, layers: list[tuple[Tensor, Tensor]], filled: int) -> KVCache:
        """A cache over existing buffers (keys, values) [B, H, W, Dh] per layer whose first
        `filled` positions are the tokens seen; new tokens are written in place while
        W has room (the continuous-batching engine gathers its slots this way)."""
        cache = cls()
        cache.batch_invariant = True
        for k, v in layers:
            cache._keys.append(k)
            cache._values.append(v)
            cache._sizes.append(filled)
        return cache

    def tensors(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer the keys and values seen, [B, H, T_seen, Dh] (views)."""
        return [
            (k[:, :, :n], v[:, :, :n])
            for k, v, n in zip(self._keys, self._values, self._sizes, strict=True)
        ]

    @property
    def length(self) -> int:
        """Tokens cached (T_seen); 0 before the first forward pass."""
        return self._sizes[0] if self._sizes else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this pass's k, v [B, H, t, Dh] for `layer`; returns all of them."""
        t = k.shape[2]
        if layer == len(self._keys):  # first pass: the prompt, with room to grow
            self._keys.append(_buffer(k, max(64, 2 * t)))
            self._values.append(_buffer(v, max(64, 2 * t)))
            self._sizes.append(0)
        n = self._sizes[layer]
        if n + t > self._keys[layer].shape[2]:
            capacity = max(2 * self._keys[layer].shape[2], n + t)
            self._keys[layer] = _grow(self._keys[layer], n, capacity)
            self._values[layer] = _grow(self._values[layer], n, capacity)
        keys, values = self._keys[layer], self._values[layer]
        keys[:, :, n : n + t] = k
        values[:, :, n : n + t] = v
        self._sizes[layer] = n + t
        if n + t == keys.shape[2]:  # full (a decode step of the engine): the buffers as they are
            return keys, values
        return keys[:, :, : n + t], values[:, :, : n + t]


def _buffer(like: Tensor, capacity: int) -> Tensor:
    b, h, _, d = like.shape
    return like.new_empty((b, h, capacity, d))


def _grow(buffer: Tensor, filled: int, capacity: int) -> Tensor:
    bigger = _buffer(buffer, capacity)
    bigger[:, :, :filled] = buffer[:, :, :filled]
    return bigger


class Rotary(nn.Module):
    """Rotary position embedding: rotates pairs of query/key features by angles that grow
    with the position, so attention scores depend on relative distance."""

    def __init__(self, head_dim: int, max_positions: int) -> None:
        super().__init__()
        inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(torch.arange(max_positions).float(), inv_freq)  # [C, Dh/2]
        # Derived from the config, so not saved with the weights (persistent=False). Both
        # halves of a head's features in one row (`rotate`): [C, Dh].
        cos, sin = angles.cos(), angles.sin()
        self.register_buffer("cos", torch.cat([cos, cos], dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat([-sin, sin], dim=-1), persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions [B, t] or [1, t] → (cos, sin) [B or 1, 1, t, Dh] for `rotate`:
        looked up once per forward pass and shared by every layer (the lookups per layer,
        for queries and keys, were an eighth of a decode step's time at 4 layers)."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def rotate(x: Tensor, angles: tuple[Tensor, Tensor]) -> Tensor:
    """x [..., t, Dh] rotated by `Rotary(positions)`'s angles, same shape and dtype,
    contiguous. In the "rotate half" layout (GPT-NeoX, Llama): with x = [x1, x2],

        [x1 cos - x2 sin, x2 cos + x1 sin] = x * [cos, cos] + [x2, x1] * [-sin, sin]

    bit for bit (a - b is a + (-b) in floating point, and + commutes): four operations
    rather than the nine of splitting and concatenating the halves."""
    cos, sin = angles
    # contiguous: the result then has the layout (strides) the halves' concatenation
    # gave, which matmul and attention kernels see
    wide = (x if x.dtype == torch.float32 else x.float()).contiguous()
    rotated = wide * cos + wide.roll(x.shape[-1] // 2, dims=-1) * sin
    return rotated if rotated.dtype == x.dtype else rotated.to(x.dtype)


def batched_matmul(a: Tensor, b: Tensor) -> Tensor:
    """`a @ b` for [B, H, n, m] @ [B, H, m, p] → [B, H, n, p], as `@` computes it (one bmm
    over the same [B*H, ...] operands, so the same numbers) without its broadcasting
    steps: 4 calls instead of ~10, twice per layer of a decode step."""
    out = torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]))
    return out.view(*a.shape[:-1], b.shape[-1])


class Attention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)  # q, k, v in one matmul
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(
        self,
        x: Tensor,
        *,
        angles: tuple[Tensor, Tensor] | None,
        mask: Tensor | None,
        blocked: Tensor | None = None,
        cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        """x [B, t, D] → [B, t, D]. `mask` [B, 1, t, T_total] (True = may attend) or None
        for plain causal attention over these t tokens alone. `blocked` (`~mask`, made
        once per pass rather than per layer): attend with plain matmul + softmax, the
        batch-invariant path (`KVCache.batch_invariant`)."""
        b, t, d = x.shape
        heads, dim = self.n_heads, self.head_dim
        qkv = self.qkv(x)
        # [B, t, 2D] → [2, B, H, t, Dh]: queries and keys as one tensor, so that the rotary
        # embedding (a dozen elementwise ops) runs once for both, not once each: the same
        # numbers, and q and k come out with the strides two separate rotations give
        qk = qkv[..., : 2 * d].view(b, t, 2, heads, dim).permute(2, 0, 3, 1, 4)
        if angles is not None:
            qk = rotate(qk, angles)
        q, k = qk.unbind(0)
        v = qkv[..., 2 * d :].view(b, t, heads, dim).transpose(1, 2)  # [B, H, t, Dh]
        if cache is not None:
            k, v = cache.update(layer, k, v)  # [B, H, T_total, Dh]
        if blocked is not None:
            scores = batched_matmul(q, k.transpose(-2, -1))  # [B, H, t, T]
            # in place: the same arithmetic as `/` and masked_fill, two allocations fewer
            scores = scores.div_(math.sqrt(dim)).masked_fill_(blocked, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            y = batched_matmul(weights, v)
            return self.proj(y.transpose(1, 2).reshape(b, t, d))
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            # without a mask: causal over these tokens, valid only when nothing is cached
            is_causal=mask is None and k.shape[2] == t and t > 1,
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model),
            nn.GELU(),
            nn.Linear(4 * config.d_model, config.d_model),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, **attention: object) -> Tensor:
        if not self.training:  # dropout is the identity: not called (a decode step's cost
            # is mostly such calls: its matrices are small)
            x = x + self.attn(self.ln1(x), **attention)
            return x + self.mlp(self.ln2(x))
        x = x + self.dropout(self.attn(self.ln1(x), **attention))
        return x + self.dropout(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    """`model(input_ids [B, T]) -> logits [B, T, vocab_size]`, causal: position t sees
    tokens 0..t only. `vocab_size` is the tokenizer's (it may be below the config's
    target when the corpus is small)."""

    def __init__(self, config: GPTConfig, vocab_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size or config.vocab_size
        self.context_length = config.context_length
        d = config.d_model
        self.embed = nn.Embedding(self.vocab_size, d)
        self.pos_embed = (
            nn.Embedding(config.context_length, d) if config.positions == "learned" else None
        )
        self.rotary = (
            Rotary(d // config.n_heads, config.context_length)
            if config.positions == "rope"
            else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled down so the residual stream's variance does
        # not grow with depth (2 residual branches per block).
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.n_layers))
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """input_ids [B, t] → logits [B, t, V] (or [B, 1, V] with `last_only`).

        cache: keys/values of earlier tokens; this pass's are appended to it in place.
        attention_mask: [B, T_seen + t], 1 = real token, 0 = padding (never attended to).
        position_ids: [B, t]; default T_seen .. T_seen + t - 1 (left-padded rows need
        their own, so that their first real token is position 0).
        """
        b, t = input_ids.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            if past + t > self.context_length:
                raise ValueError(
                    f"{past + t} tokens exceed the model's context_length {self.context_length}"
                )
            position_ids = torch.arange(past, past + t, device=input_ids.device)[None]
        x = self.embed(input_ids)  # [B, t, D]
        if self.pos_embed is not None:
            x = x + self.pos_embed(position_ids)
        if self.training:
            x = self.dropout(x)
        mask = self._attention_mask(attention_mask, past, t, input_ids.device)
        blocked = None
        if cache is not None and cache.batch_invariant and mask is not None:
            blocked = ~mask
        angles = self.rotary(position_ids) if self.rotary is not None else None
        for i, block in enumerate(self.blocks):
            x = block(x, angles=angles, mask=mask, blocked=blocked, cache=cache, layer=i)
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_f(x))  # [B, t, V]

    @staticmethod
    def _attention_mask(
        attention_mask: Tensor | None, past: int, t: int, device: torch.device
    ) -> Tensor | None:
        """Boolean [B or 1, 1, t, past + t] (True = may attend), or None when plain causal
        attention does it (nothing cached, or one new token that may see everything)."""
        if attention_mask is None and (past == 0 or t == 1):
            return None
        if t == 1:  # one new token (a decode step) sees every real token and itself
            allowed = attention_mask[:, None, None, :] != 0  # [B, 1, 1, T]
            allowed[..., past] = True
            return allowed
        total = past + t
        query = torch.arange(past, total, device=device)[:, None]  # [t, 1]
        key = torch.arange(total, device=device)[None, :]  # [1, T]
        allowed = (key <= query)[None, None]  # [1, 1, t, T]
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]
            # A padding position would attend to nothing, and softmax over nothing is NaN
            # (which then leaks through 0 * NaN): let every position see itself.
            allowed = allowed | (key == query)[None, None]
        return allowed

    @torch.no_grad()
    def step(
        self,
        input_ids: Tensor,
        *,
        cache: KVCache | None,
        attention_mask: Tensor | None,
        position_ids: Tensor,
        use_cache: bool = True,
    ) -> tuple[Tensor, KVCache | None]:
        """The generation engine's step (`foundry.lm.generate.StepFn`): logits of the last
        position [B, 1, V], and the cache (None when `use_cache` is False)."""
        if use_cache and cache is None:
            cache = KVCache()
        logits = self.forward(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if use_cache else None,
            last_only=True,
        )
        return logits, cache

    def num_parameters(self) -> int:
        """Distinct parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def tied(self) -> bool:
        return self.head.weight is self.embed.weight

    def package_weights(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """`state` as a package stores it: a tied head is the embedding, saved once."""
        return {k: v for k, v in state.items() if not (self.tied and k == "head.weight")}

    def load_package_weights(self, state: dict[str, Tensor]) -> None:
        """Load what `package_weights` saved (strict: every other weight must be there)."""
        if self.tied and "head.weight" not in state and "embed.weight" in state:
            state = {**state, "head.weight": state["embed.weight"]}
        self.load_state_dict(state)
