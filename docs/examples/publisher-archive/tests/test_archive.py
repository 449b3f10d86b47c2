import publisher_archive
import pytest

from publisher.testing import OutputContract, load_outputs


class TestArchive(OutputContract):
    inventory_required = True

    @pytest.fixture
    def output(self, tmp_path):
        (output,) = load_outputs(publisher_archive, data_dir=str(tmp_path))
        return output
