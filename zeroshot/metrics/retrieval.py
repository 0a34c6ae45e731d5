"""Image-text retrieval recall@k, computed in blocks of queries so no full similarity matrix is ever held.

Every image keeps all its captions. Image -> text ("text retrieval", as CLIP_benchmark and DataComp name it):
an image is found at k when any caption of its own is among the k captions most similar to it. Text -> image
("image retrieval"): a caption finds its image at k when that image is among the k images most similar to it.

Ties (identical captions score exactly alike: MSCOCO has such captions) are broken as in CLIP_benchmark's
`recall_at_k`, whose code produced the published Flickr30k/MSCOCO numbers of open_clip and DataComp: the k
candidates are `torch.topk(scores, k)` of the query's row of the score matrix (text x image, as it computes it;
image queries read its transpose), so a tie at the k-th place goes the way torch.topk sends it. How many queries
had such a tie is recorded (`ties@k`). Collapsed features (every score equal) still do not score 100: topk then
returns k of the N candidates, so recall@k is about k / N, as CLIP_benchmark gives (docs/trust.md).
A query's rank (ranks.npz, the CSVs) is the number of wrong candidates scoring at least as high as its best right
one: ties count against it there, so `rank < k` is a lower bound of the recall when a tie straddles k.
DataComp's main metric, `mean_recall@1`, is the mean of the two recall@1 values (its eval_utils/retr_eval.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

BLOCK = 1024  # queries per block: 1,024 x 25,000 fp32 scores are 100 MB
TOP = 10  # retrieved candidates kept per query for the run's CSVs


@dataclass
class RetrievalResult:
    image_ranks: torch.Tensor  # [N] rank of each image's best own caption among all captions (0 = first)
    text_ranks: torch.Tensor  # [T] rank of each caption's image among all images
    image_top: torch.Tensor  # [N, TOP] caption indices most similar to each image
    text_top: torch.Tensor  # [T, TOP] image indices most similar to each caption
    # per "text_retrieval@k" / "image_retrieval@k": whether each query found a right candidate in torch.topk's k
    hits: dict[str, torch.Tensor] = field(default_factory=dict)
    ties: dict[str, int] = field(default_factory=dict)  # same keys: queries whose k-th and (k+1)-th scores are equal

    def tie_counts(self) -> dict[str, int]:
        """metrics.json's `text_retrieval_ties@k` / `image_retrieval_ties@k`: queries tied at the k-th place."""
        return {f"{key.replace('@', '_ties@')}": n for key, n in self.ties.items()}

    def recalls(self, ks=(1, 5, 10)) -> dict[str, float]:
        out = {}
        for k in ks:
            for side in ("text_retrieval", "image_retrieval"):
                if f"{side}@{k}" not in self.hits:
                    raise ValueError(f"recall@{k} was not computed: pass ks={tuple(ks)} to retrieve")
                out[f"{side}_recall@{k}"] = self.hits[f"{side}@{k}"].double().mean().item()
        if 1 in ks:
            out["mean_recall@1"] = 0.5 * (out["text_retrieval_recall@1"] + out["image_retrieval_recall@1"])
        return out


def caption_table(text_image: torch.Tensor, n_images: int) -> torch.Tensor:
    """[N, M] indices of each image's captions, padded with -1 (M = the most captions any image has)."""
    counts = torch.bincount(text_image, minlength=n_images)
    if bool((counts == 0).any()):
        raise ValueError(f"image {int((counts == 0).nonzero()[0])} has no caption: every image needs at least one")
    order = torch.argsort(text_image, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(text_image)) - starts[text_image[order]]
    table = torch.full((n_images, int(counts.max())), -1, dtype=torch.long)
    table[text_image[order], slot] = order
    return table


def topk_hits(scores: torch.Tensor, right, ks, side: str, result: RetrievalResult) -> None:
    """CLIP_benchmark's recall_at_k on one block of query rows: a hit at k is a right candidate among
    torch.topk(scores, k) (called for each k, as it does); also counts the rows tied at the k-th place.
    `right(indices)` says which of the candidates at `indices` [b, k] are right for their row."""
    n = scores.shape[1]
    values = scores.topk(min(max(ks) + 1, n), dim=1).values if n else scores[:, :0]
    for k in ks:
        hit = right(scores.topk(min(k, n), dim=1).indices).any(1).cpu()
        key = f"{side}@{k}"
        result.hits[key] = torch.cat([result.hits[key], hit]) if key in result.hits else hit
        tied = int((values[:, k - 1] == values[:, k]).sum()) if k < values.shape[1] else 0
        result.ties[key] = result.ties.get(key, 0) + tied


def retrieve(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor,
             block: int | None = None, device: torch.device | str = "cpu", ks=(1, 5, 10)) -> RetrievalResult:
    """Ranks, recall@k for `ks` and top candidates both ways. `text_image[t]` is the image caption t describes.

    Features are L2-normalized here (cosine similarity; logit_scale and a SigLIP bias change no ranking)."""
    block = int(block or BLOCK)
    images = F.normalize(image_features.float(), dim=-1).to(device)
    texts = F.normalize(text_features.float(), dim=-1).to(device)
    text_image = text_image.long()
    n, t = len(images), len(texts)
    if len(text_image) != t or (t and (int(text_image.min()) < 0 or int(text_image.max()) >= n)):
        raise ValueError(f"text_image must give an image index in [0, {n}) for each of the {t} captions")
    table = caption_table(text_image, n).to(device)
    top = min(TOP, t)
    image_ranks, image_top = torch.empty(n, dtype=torch.long), torch.empty(n, top, dtype=torch.long)
    result = RetrievalResult(image_ranks, torch.empty(0), image_top, torch.empty(0))
    owner = text_image.to(device)
    for a in range(0, n, block):
        scores = (texts @ images[a:a + block].T).T  # [b, T]: CLIP_benchmark's text x image scores, transposed
        queries = torch.arange(a, min(a + block, n), device=device)[:, None]
        topk_hits(scores, lambda idx: owner[idx] == queries, ks, "text_retrieval", result)
        own = table[a:a + block]
        own_scores = scores.gather(1, own.clamp(min=0)).masked_fill(own < 0, float("-inf"))  # [b, M]
        best = own_scores.max(dim=1, keepdim=True).values
        # wrong captions at least as similar as the best right one = all such captions less the right ones
        ge = (scores >= best).sum(1) - (own_scores >= best).sum(1)
        image_ranks[a:a + block] = ge.cpu()
        image_top[a:a + block] = scores.topk(top, dim=1).indices.cpu()
    top = min(TOP, n)
    text_ranks, text_top = torch.empty(t, dtype=torch.long), torch.empty(t, top, dtype=torch.long)
    target = text_image.to(device)
    for a in range(0, t, block):
        scores = texts[a:a + block] @ images.T  # [b, N]
        right = scores.gather(1, target[a:a + block, None])
        text_ranks[a:a + block] = ((scores >= right).sum(1) - 1).cpu()  # less the right image itself
        text_top[a:a + block] = scores.topk(top, dim=1).indices.cpu()
        topk_hits(scores, lambda idx: idx == target[a:a + block, None], ks, "image_retrieval", result)
    result.text_ranks, result.text_top = text_ranks, text_top
    return result
