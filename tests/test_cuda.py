"""The CUDA path: half precision against the reference in the same precision, pinned memory and non-blocking
copies. Runs wherever CUDA is present and skips cleanly elsewhere."""
import copy

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_parity_on_cuda(openai_clip, precision):
    from architectures import ARCHITECTURES
    from zeroshot.models.config import build_model
    from zeroshot.models.precision import DTYPES, convert_weights
    from test_model import PROMPTS, _openai_reference, rel_err

    ref = _openai_reference(openai_clip, ARCHITECTURES["ViT-B/32"], seed=0)
    ours = build_model(ref.state_dict())
    dtype = DTYPES[precision]
    ref = convert_weights(copy.deepcopy(ref), dtype).cuda()  # the same conversion clip.load applies, in this dtype
    ours = convert_weights(ours, dtype).cuda()
    torch.manual_seed(1)
    images = torch.randn(4, 3, 224, 224, device="cuda")
    text = openai_clip.tokenize(PROMPTS).cuda()
    with torch.no_grad():
        ri, oi = ref.encode_image(images.to(dtype)), ours.encode_image(images)
        rt, ot = ref.encode_text(text), ours.encode_text(text)
    assert oi.dtype == dtype and rel_err(ri.float(), oi.float()) < 2e-2 and rel_err(rt.float(), ot.float()) < 2e-2
    assert torch.nn.functional.cosine_similarity(ri.float(), oi.float()).min() > 0.999


def test_extraction_uses_pinned_memory_and_non_blocking_copies(tmp_path, tiny_vit, monkeypatch):
    from omegaconf import OmegaConf

    from datagen import write_imagefolder
    from zeroshot.features import extract as features
    from zeroshot.data.readers import build_dataset
    from zeroshot.models.transforms import image_transform

    folder = write_imagefolder(tmp_path / "imgs", ["a", "b"], per_class=4)
    ds = build_dataset(OmegaConf.create({"name": "imagefolder", "kind": "imagefolder", "root": str(folder)}), image_transform(32))
    seen = {}
    real = torch.utils.data.DataLoader

    def loader(*args, **kwargs):
        seen["pin_memory"] = kwargs.get("pin_memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    model = copy.deepcopy(tiny_vit).cuda()
    cpu = features.extract_features(tiny_vit, ds, how=features.Encoding(batch_size=4))
    gpu = features.extract_features(model, ds, how=features.Encoding(batch_size=4, device="cuda"))
    assert seen["pin_memory"] is True and torch.allclose(cpu.features, gpu.features, atol=1e-4)
