"""vLLM's Run:ai model streamer loading a safetensors file of at least 1 GiB through the
gateway. It needs torch (a multi-GB install), so it runs only in the heavy suite
(`NABU_HEAVY=1 scripts/test`, which installs requirements-heavy.txt)."""

import os
import uuid

import pytest

heavy = pytest.mark.skipif(
    os.environ.get("NABU_HEAVY") != "1", reason="heavy suite only (NABU_HEAVY=1)"
)


@heavy
def test_runai_streamer_reads_every_tensor(endpoint, credentials, s3, tmp_path):
    import torch
    from runai_model_streamer import SafetensorsStreamer
    from safetensors.torch import save_file

    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=credentials[0],
        AWS_SECRET_ACCESS_KEY=credentials[1],
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING="0",
    )
    generator = torch.Generator().manual_seed(6)
    tensors = {
        f"layers.{i}.weight": torch.randn(4096, 8192, generator=generator) for i in range(8)
    }
    tensors["embed.bias"] = torch.arange(1000, dtype=torch.int64)
    tensors["norm.half"] = torch.randn(333, 7, generator=generator).to(torch.float16)
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    assert path.stat().st_size >= 1 << 30

    bucket = f"runai-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(path), bucket, "llama/model.safetensors")
    path.unlink()

    seen = set()
    with SafetensorsStreamer() as streamer:
        streamer.stream_file(f"s3://{bucket}/llama/model.safetensors")
        for name, tensor in streamer.get_tensors():
            assert torch.equal(tensor, tensors[name]), name
            seen.add(name)
    assert seen == set(tensors)
    s3.delete_object(Bucket=bucket, Key="llama/model.safetensors")
    s3.delete_bucket(Bucket=bucket)
