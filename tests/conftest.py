import pytest
import torch

# On a shared 2-core box, two intra-op threads make small ops stall for milliseconds.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
