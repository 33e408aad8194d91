"""RQ-VAE semantic-ID tokenizer, as used by TIGER.

References
----------
* Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023 (TIGER):
  item text embeddings -> MLP encoder -> residual quantizer with L levels of K codes ->
  mirrored MLP decoder; k-means codebook initialisation; the code tuple is the item's
  semantic ID.
* Zeghidour et al., "SoundStream: An End-to-End Neural Audio Codec", 2021, and
  Lee et al., "Autoregressive Image Generation using Residual Quantization", CVPR 2022:
  residual vector quantization with a straight-through estimator, commitment loss and
  dead-code restarts.

Loss (per batch)::

    L = ||x - dec(z_q)||^2 + sum_l ( ||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2 )

where ``r_1 = enc(x)``, ``e_l`` is the codeword nearest to ``r_l``, ``r_{l+1} = r_l - e_l`` and
``z_q = sum_l e_l`` is passed to the decoder with the straight-through estimator
``z + sg[z_q - z]``.
"""
import contextlib
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .kmeans import (
    BaseTokenizer,
    clamp_k,
    faiss_threads,
    fit_residual_kmeans,
    scoped_threads,
    validate_embeddings,
)

logger = logging.getLogger(__name__)

ENCODE_BATCH = 8192


@contextlib.contextmanager
def torch_threads(n_threads):
    """Temporarily set torch's intra-op thread count; no-op (global state untouched) when None."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _mlp(dims):
    """Linear layers through ``dims`` with ReLU between them (none after the last)."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualQuantizer(nn.Module):
    """L codebooks [K_l, d]; nearest-codeword residual quantization of latents [B, d]."""

    def __init__(self, codebook_sizes, latent_dim):
        super().__init__()
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(k, latent_dim) * 0.01) for k in codebook_sizes]
        )

    @staticmethod
    def nearest(residual, codebook):
        """Index [B] of the nearest codeword and squared distances [B, K]."""
        dist = (residual.pow(2).sum(1, keepdim=True)
                - 2.0 * residual @ codebook.t()
                + codebook.pow(2).sum(1)[None, :])  # [B, K]
        return dist.argmin(dim=1), dist

    def forward(self, z, beta=0.25, n_levels=None):
        """Quantize z [B, d] with the first ``n_levels`` codebooks.

        Returns codes [B, L], z_q [B, d], quantization loss (scalar) and the list of
        per-level input residuals (each [B, d], detached).
        """
        n_levels = len(self.codebooks) if n_levels is None else n_levels
        residual = z
        z_q = torch.zeros_like(z)
        loss = z.new_zeros(())
        codes, residuals = [], []
        for codebook in list(self.codebooks)[:n_levels]:
            idx, _ = self.nearest(residual.detach(), codebook)  # [B]
            e = codebook[idx]  # [B, d]
            loss = loss + F.mse_loss(e, residual.detach()) + beta * F.mse_loss(residual, e.detach())
            residuals.append(residual.detach())
            codes.append(idx)
            z_q = z_q + e
            residual = residual - e.detach()
        codes = torch.stack(codes, dim=1) if codes else z.new_zeros((z.shape[0], 0), dtype=torch.long)
        return codes, z_q, loss, residuals


class RQVAE(nn.Module):
    """MLP encoder D -> hidden -> latent, residual quantizer, mirrored MLP decoder."""

    def __init__(self, input_dim, hidden_dims, latent_dim, codebook_sizes, beta=0.25):
        super().__init__()
        dims = [input_dim, *hidden_dims, latent_dim]
        self.encoder = _mlp(dims)  # [B, D] -> [B, d]
        self.decoder = _mlp(dims[::-1])  # [B, d] -> [B, D]
        self.quantizer = ResidualQuantizer(codebook_sizes, latent_dim)
        self.beta = beta

    def forward(self, x):
        """x [B, D] -> (x_hat [B, D], codes [B, L], recon loss, quant loss, residuals)."""
        z = self.encoder(x)  # [B, d]
        codes, z_q, q_loss, residuals = self.quantizer(z, self.beta)
        z_st = z + (z_q - z).detach()  # straight-through estimator
        x_hat = self.decoder(z_st)
        return x_hat, codes, F.mse_loss(x_hat, x), q_loss, residuals


class RQVAETokenizer(BaseTokenizer):
    """Train an RQ-VAE on item embeddings and use its code tuples as semantic IDs.

    Training budget: ``epochs`` (default 100) passes over the items, or ``steps`` optimizer steps when set (then
    ``epochs`` is ignored and the last pass stops mid-way). The TIGER paper and the official DiscRec code train
    20,000 epochs (``{epochs: 20000}``: about 240k steps of 1024 items on amazon-beauty's 12k items).

    Parameters (beyond the common ones): ``epochs`` (default 100), ``steps`` (None), ``lr`` (1e-3),
    ``batch_size`` (1024), ``hidden_dims`` ((512, 256, 128)), ``latent_dim`` (32),
    ``beta`` (commitment weight, 0.25), ``weight_decay`` (0.0), ``optimizer``
    ("adam" | "adamw"), ``kmeans_init`` (True), ``kmeans_niter`` (20),
    ``dead_code_restart`` (True), ``restart_sample`` (items used to re-seed dead codes, 4096),
    ``n_threads`` (None: leave torch/faiss thread settings alone; an int limits both while
    this tokenizer works and restores them afterwards - 1 is fastest for tiny models on
    busy CPUs).
    """

    name = "rqvae"

    def __init__(self, n_levels, codebook_sizes, seed, device="cpu", show_progress=True,
                 epochs=100, steps=None, lr=1e-3, batch_size=1024, hidden_dims=(512, 256, 128), latent_dim=32,
                 beta=0.25, weight_decay=0.0, optimizer="adam", kmeans_init=True, kmeans_niter=20,
                 dead_code_restart=True, restart_sample=4096, n_threads=None):
        super().__init__(n_levels, codebook_sizes, seed, device, show_progress, n_threads)
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        self.epochs = int(epochs)
        self.steps = None if steps is None else int(steps)
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"rqvae steps must be >= 1 (or None to train `epochs` passes), got {steps}")
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.weight_decay = float(weight_decay)
        self.optimizer_name = optimizer
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_niter = int(kmeans_niter)
        self.dead_code_restart = bool(dead_code_restart)
        self.restart_sample = int(restart_sample)
        self.model = None
        self.history = []  # per-epoch dicts: loss, recon, quant, dead codes per level

    @contextlib.contextmanager
    def thread_scope(self):
        """Limit torch and faiss threads while working, when ``n_threads`` is set."""
        with torch_threads(self.n_threads), faiss_threads(self.n_threads):
            yield

    # ------------------------------------------------------------------ training
    @scoped_threads
    def fit(self, emb):
        x_np = validate_embeddings(emb)  # [N, D]
        sizes = [clamp_k(k, x_np.shape[0], f"rqvae level {i + 1}")
                 for i, k in enumerate(self.codebook_sizes)]
        devices = [torch.device(self.device).index or 0] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seed locally, restore global RNG after
            torch.manual_seed(self.seed)
            self.model = RQVAE(x_np.shape[1], self.hidden_dims, self.latent_dim, sizes, self.beta)
            self.model.to(self.device)
            x = torch.from_numpy(x_np).to(self.device)  # [N, D]
            if self.kmeans_init:
                self._init_codebooks(x, sizes)
            self._train(x)
        self.model.eval()
        self.fitted = True
        return self

    @torch.no_grad()
    def _init_codebooks(self, x, sizes):
        """Initialise codebooks by residual k-means on all latents of the (untrained) encoder."""
        z = self._latents(x).cpu().numpy()  # [N, d]
        centroids, _, _ = fit_residual_kmeans(z, sizes, self.kmeans_niter, self.seed,
                                           where="rqvae k-means init")
        for codebook, cents in zip(self.model.quantizer.codebooks, centroids):
            cents = torch.from_numpy(cents[:codebook.shape[0]]).to(codebook.device)  # [<=K, d]
            codebook.data[:cents.shape[0]] = cents  # duplicates in tiny data may leave fewer centroids

    def _make_optimizer(self):
        cls = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        return cls(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _train(self, x):
        optimizer = self._make_optimizer()
        n = x.shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        per_epoch = -(-n // self.batch_size)
        epochs = self.epochs if self.steps is None else -(-self.steps // per_epoch)
        self.steps_done = 0
        bar = tqdm(range(epochs), desc="rqvae epochs", disable=not self.show_progress)
        for epoch in bar:
            self.model.train()
            limit = None if self.steps is None else self.steps - self.steps_done
            stats = self._train_epoch(x, optimizer, torch.randperm(n, generator=gen), max_steps=limit)
            if self.dead_code_restart and (limit is None or limit >= per_epoch):  # not after a cut last pass
                stats["restarted"] = self._restart_dead_codes(x, stats.pop("counts"), gen)
            else:
                stats.pop("counts")
            self.history.append({k: (float(v) if k != "restarted" else v) for k, v in stats.items()})
            bar.set_postfix(loss=f"{stats['loss']:.4f}", recon=f"{stats['recon']:.4f}")
            logger.debug("rqvae epoch %d: %s", epoch + 1, stats)

    def _train_epoch(self, x, optimizer, perm, max_steps=None):
        """One pass over ``x`` [N, D] in the order ``perm`` [N] (at most ``max_steps`` batches); returns mean losses +
        code counts."""
        counts = [torch.zeros(cb.shape[0], dtype=torch.long, device=x.device)
                  for cb in self.model.quantizer.codebooks]
        totals = np.zeros(3)
        seen = 0
        for step, start in enumerate(range(0, x.shape[0], self.batch_size)):
            if max_steps is not None and step >= max_steps:
                break
            batch = x[perm[start:start + self.batch_size].to(x.device)]  # [B, D]
            seen += batch.shape[0]
            self.steps_done += 1
            _, codes, recon, q_loss, _ = self.model(batch)
            loss = recon + q_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for level, cnt in enumerate(counts):
                cnt += torch.bincount(codes[:, level], minlength=cnt.shape[0])
            totals += np.array([loss.item(), recon.item(), q_loss.item()]) * batch.shape[0]
        totals /= max(seen, 1)
        return {"loss": totals[0], "recon": totals[1], "quant": totals[2], "counts": counts}

    @torch.no_grad()
    def _restart_dead_codes(self, x, counts, gen):
        """Re-seed codes unused this epoch with random current residuals of their level."""
        dead = [torch.nonzero(c == 0).flatten() for c in counts]
        n_dead = [int(d.numel()) for d in dead]
        if not any(n_dead):
            return n_dead
        self.model.eval()
        sample = torch.randperm(x.shape[0], generator=gen)[:self.restart_sample]
        z = self.model.encoder(x[sample.to(x.device)])  # [S, d]
        _, _, _, residuals = self.model.quantizer(z, self.beta)  # L x [S, d]
        for codebook, dead_idx, residual in zip(self.model.quantizer.codebooks, dead, residuals):
            if dead_idx.numel() == 0:
                continue
            pick = torch.randint(residual.shape[0], (dead_idx.numel(),), generator=gen)
            codebook.data[dead_idx] = residual[pick.to(residual.device)]
        return n_dead

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _latents(self, x):
        """Encoder output [N, d] for x [N, D], in batches."""
        self.model.eval()
        return torch.cat([self.model.encoder(x[s:s + ENCODE_BATCH])
                          for s in range(0, x.shape[0], ENCODE_BATCH)])

    @torch.no_grad()
    def _quantize_all(self, emb, n_levels=None):
        """Returns (codes [N, n_levels], z_q [N, d], residual after n_levels [N, d], x [N, D])."""
        self._check_fitted()
        x = torch.from_numpy(validate_embeddings(emb)).to(self.device)
        z = self._latents(x)
        codes, z_q, _, _ = self.model.quantizer(z, self.beta, n_levels)
        return codes, z_q, z - z_q, x

    @scoped_threads
    def encode(self, emb):
        codes, _, _, _ = self._quantize_all(emb)
        return codes.cpu().numpy().astype(np.int64)

    @scoped_threads
    @torch.no_grad()
    def last_level_distances(self, emb):
        """Squared distances [N, K_L] from the level-(L-1) latent residual to the last codebook."""
        _, _, residual, _ = self._quantize_all(emb, self.n_levels - 1)
        last = self.model.quantizer.codebooks[-1]
        _, dist = ResidualQuantizer.nearest(residual, last)  # [N, k_eff]
        out = np.full((dist.shape[0], self.codebook_sizes[-1]), np.inf, dtype=np.float32)
        out[:, :dist.shape[1]] = dist.clamp_min(0).cpu().numpy()
        return out

    @scoped_threads
    @torch.no_grad()
    def reconstruction_error(self, emb):
        """Mean squared error per element of decoder(z_q) vs the input embeddings."""
        _, z_q, _, x = self._quantize_all(emb)
        x_hat = torch.cat([self.model.decoder(z_q[s:s + ENCODE_BATCH])
                           for s in range(0, z_q.shape[0], ENCODE_BATCH)])
        return float(F.mse_loss(x_hat, x).item())
