"""The project's own PyTorch rendering of the seed tutorial's Multi-Head Latent Attention.

This follows the math of the MLA tutorial this project grew from (docs/design.md section 2);
the code is written for this project. It is the *reference* for the tutorial variant:

  c_q       = q_proj(x)                      (r_q values, no query norm)
  q_content = q_decompress(c_q)              (H * head_dim)
  q_rope    = q_rope_proj(c_q)               (H * rope_dim, one per head)
  c_kv      = kv_norm(kv_proj(x))            (RMSNorm over kv_lora_rank, eps 1e-6)
  k_content = k_decompress(c_kv)             (H * head_dim)
  v         = v_decompress(c_kv)             (H * head_dim)
  k_rope    = k_rope_proj(x)                 (H * rope_dim, one per head, from x)
  RoPE, layout "half" (rotate_half), theta 10000, cos/sin = cat(freqs, freqs)
  scores    = [q_content | q_rope] . [k_content | k_rope] * (head_dim + rope_dim)^-0.5
  causal softmax, out = o_proj(concat_h(attn @ v))   (o_proj bias optional)

Evaluation only: no dropout and no padding mask (the tutorial's padding mask
computes 0 * -inf = NaN; the engine does not copy that).
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TutorialConfig:
    n_embd: int = 256
    n_head: int = 8
    kv_lora_rank: int = 128
    q_lora_rank: int = 192
    rope_dim: int = 64
    bias: bool = True          # o_proj bias
    block_size: int = 128      # longest sequence the RoPE tables / mask cover
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6


class LatentRMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), computed in the input's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inv_rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * (x * inv_rms)


class HalfRotary(nn.Module):
    """Rotary tables for the "half" (rotate_half / NeoX) layout."""

    def __init__(self, dim: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError("rope dim must be even")
        self.dim = dim
        self.max_len = max_len
        self.theta = theta
        exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
        self.register_buffer("inv_freq", 1.0 / (theta ** exponents), persistent=False)

    def tables(self, n_pos: int, dtype: torch.dtype):
        """cos, sin of shape [n_pos, dim] for positions 0..n_pos-1."""
        pos = torch.arange(n_pos, dtype=torch.float64, device=self.inv_freq.device)
        angles = torch.outer(pos, self.inv_freq.to(torch.float64))   # [n_pos, dim/2]
        both = torch.cat([angles, angles], dim=-1)                   # [n_pos, dim]
        return both.cos().to(dtype), both.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_half_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class MultiheadLatentAttention(nn.Module):
    def __init__(self, cfg: TutorialConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError("n_embd must be divisible by n_head")
        self.cfg = cfg
        self.n_embd = cfg.n_embd
        self.n_head = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.kv_lora_rank = cfg.kv_lora_rank
        self.q_lora_rank = cfg.q_lora_rank
        self.rope_dim = cfg.rope_dim
        H, hd, p = self.n_head, self.head_dim, self.rope_dim

        # key/value latent path
        self.kv_proj = nn.Linear(cfg.n_embd, cfg.kv_lora_rank, bias=False)
        self.kv_norm = LatentRMSNorm(cfg.kv_lora_rank, eps=cfg.rms_norm_eps)
        self.k_decompress = nn.Linear(cfg.kv_lora_rank, H * hd, bias=False)
        self.v_decompress = nn.Linear(cfg.kv_lora_rank, H * hd, bias=False)
        # query latent path
        self.q_proj = nn.Linear(cfg.n_embd, cfg.q_lora_rank, bias=False)
        self.q_decompress = nn.Linear(cfg.q_lora_rank, H * hd, bias=False)
        # positional (rotary) parts, one per head
        self.k_rope_proj = nn.Linear(cfg.n_embd, H * p, bias=False)
        self.q_rope_proj = nn.Linear(cfg.q_lora_rank, H * p, bias=False)
        # output
        self.o_proj = nn.Linear(H * hd, cfg.n_embd, bias=cfg.bias)

        self.rope = HalfRotary(p, cfg.block_size, cfg.rope_theta)
        self.scale = (hd + p) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, n_embd] at positions 0..T-1, causal. Returns [B, T, n_embd]."""
        B, T, _ = x.shape
        H, hd, p = self.n_head, self.head_dim, self.rope_dim

        c_kv = self.kv_norm(self.kv_proj(x))
        c_q = self.q_proj(x)

        def heads(t: torch.Tensor, width: int) -> torch.Tensor:
            return t.view(B, T, H, width).transpose(1, 2)          # [B, H, T, width]

        k_content = heads(self.k_decompress(c_kv), hd)
        v = heads(self.v_decompress(c_kv), hd)
        q_content = heads(self.q_decompress(c_q), hd)
        k_rope = heads(self.k_rope_proj(x), p)
        q_rope = heads(self.q_rope_proj(c_q), p)

        cos, sin = self.rope.tables(T, x.dtype)
        q_rope = apply_half_rope(q_rope, cos, sin)
        k_rope = apply_half_rope(k_rope, cos, sin)

        q = torch.cat([q_content, q_rope], dim=-1)
        k = torch.cat([k_content, k_rope], dim=-1)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, T, H * hd)
        return self.o_proj(out)
