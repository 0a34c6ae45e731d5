"""build_classifier: the trimmed, bucketed, de-duplicated path equals the plain one, and matches open_clip's."""
import torch
import torch.nn.functional as F

import zeroshot
from zeroshot import build_classifier
from zeroshot.classifier import encode_prompts, length_batches

CLASSES = ["tabby cat", "golden retriever dog", "car", "a very long class name with many many words in it"]
TEMPLATES = ["a photo of a {}.", "{}", "a blurry low resolution photo of the small {} in the corner of the image."]


def plain_classifier(model, classnames, templates):
    """The textbook loop: every prompt alone, all 77 positions, no cut, no sorting, no reuse."""
    weights = []
    with torch.no_grad():
        for c in classnames:
            feats = []
            for t in templates:
                tokens = zeroshot.tokenize([t.format(c)])
                x = model.token_embedding(tokens) + model.positional_embedding
                for block in model.transformer.resblocks:
                    x = block(x, causal=True)
                x = model.ln_final(x)[0, tokens.argmax(-1)[0]] @ model.text_projection
                feats.append(F.normalize(x, dim=-1))
            weights.append(F.normalize(torch.stack(feats).mean(0), dim=-1))
    return torch.stack(weights, dim=1)


def test_fast_path_equals_plain_path(tiny_vit):
    fast = build_classifier(tiny_vit, CLASSES, TEMPLATES, batch_size=3)
    plain = plain_classifier(tiny_vit, CLASSES, TEMPLATES)
    assert fast.shape == (32, 4)
    assert torch.allclose(fast, plain, atol=1e-5)
    assert F.cosine_similarity(fast.t(), plain.t()).min() > 0.99999
    assert torch.allclose(fast.norm(dim=0), torch.ones(4), atol=1e-6)


def test_duplicate_prompts_are_encoded_once(tiny_vit):
    seen = []
    original = tiny_vit.encode_text
    tiny_vit.encode_text = lambda t: seen.append(t.shape[0]) or original(t)
    try:
        feats = encode_prompts(tiny_vit, ["a cat", "a dog", "a cat", "a cat"], batch_size=8)
    finally:
        del tiny_vit.encode_text
    assert seen == [2] and torch.equal(feats[0], feats[2])


def test_length_batches_cover_each_prompt_once_and_pad_less_than_slices_of_the_sorted_order():
    lengths = torch.tensor([9] * 508 + [8] * 246 + [10] * 155 + [11] * 49 + [12] * 24 + [13] * 9 + [18] * 9)
    lengths = lengths[torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0))]
    batches = length_batches(lengths, 256)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(lengths)))
    assert all(0 < len(b) <= 256 for b in batches)
    maxima = [int(lengths[b].max()) for b in batches]
    assert maxima == sorted(maxima) and all(int(lengths[b].min()) >= m for b, m in zip(batches[1:], maxima))
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    order = torch.argsort(lengths, stable=True)
    sliced = sum(len(order[i:i + 256]) * int(lengths[order[i:i + 256]].max()) for i in range(0, len(order), 256))
    assert padded == 9290 < sliced == 11344 and [len(b) for b in batches] == [246, 256, 252, 155, 73, 18]
    assert length_batches(torch.tensor([], dtype=torch.long), 256) == []
    assert [b.tolist() for b in length_batches(torch.tensor([3, 2, 3]), 1)] == [[1], [0], [2]]


def test_matches_open_clip_zero_shot_classifier(open_clip):
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    from zeroshot.models.config import build_model

    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-B-32-quickgelu").eval()
    ours = build_model(ref.state_dict())
    with torch.no_grad():
        theirs = build_zero_shot_classifier(ref, open_clip.get_tokenizer("ViT-B-32"), CLASSES, TEMPLATES)
    mine = build_classifier(ours, CLASSES, TEMPLATES)
    assert F.cosine_similarity(mine.t(), theirs.t()).min() > 0.99999
