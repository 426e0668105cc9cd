"""E-MM1's triplets.csv, read directly, gives the same training rows as the equivalent triples table."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.manifest import ManifestError
from trainer.data.emm1 import read_triplets
from trainer.data.rows import triple_rows

TRIPLETS = """encord_text_id,paired_modality,annotated_modality,encord_paired_id,encord_annotated_id,annotation
10,image,audio,7,3,1
10,image,audio,7,4,3
11,image,audio,8,4,2
12,image,audio,9,3,3
"""
INFOS = {
    "text": "encord_text_id,caption,key\n10,a dog barks,s0\n11,rain,s1\n12,a bell,s2\n",
    "image": "encord_image_id,save_folder,file_name\n7,img,s0.jpg\n8,img,s1.jpg\n9,img,s2.jpg\n",
    "audio": "encord_audio_id,save_folder,file_name,key\n3,aud,x.flac,s0\n4,aud,y.flac,s1\n",
}


@pytest.fixture
def triplets(tmp_path):
    (tmp_path / "infos").mkdir()
    for m, text in INFOS.items():
        (tmp_path / "infos" / f"{m}.csv").write_text(text)
    (tmp_path / "triplets.csv").write_text(TRIPLETS)
    return tmp_path / "triplets.csv"


def test_same_rows_as_the_triples_table(triplets, tmp_path):
    table = read_triplets(triplets)
    by_hand = [("s0", "audio", "s0", "good"), ("s0", "image", "s0", "good"), ("s0", "audio", "s1", "bad"),
               ("s1", "audio", "s1", "partial"), ("s1", "image", "s1", "good"), ("s2", "audio", "s0", "bad"),
               ("s2", "image", "s2", "good")]
    assert sorted(zip(*[table.column(c).to_pylist() for c in ("query_key", "modality", "target_key", "label")],
                      strict=True)) == sorted(by_hand)
    pq.write_table(pa.table({c: [r[i] for r in by_hand] for i, c in
                             enumerate(("query_key", "modality", "target_key", "label"))}), tmp_path / "t.parquet")
    anchor = np.array(["s0", "s1", "s2"], dtype=object)
    stores = {"image": np.array(["s2", "s1", "s0"], dtype=object), "audio": np.array(["s1", "s0"], dtype=object)}
    for partial in ("drop", "soft"):
        got = triple_rows(table, anchor, stores, partial, 0.5)
        want = triple_rows(str(tmp_path / "t.parquet"), anchor, stores, partial, 0.5)
        order_g, order_w = np.lexsort([got.anchor, got.partner["audio"]]), np.lexsort([want.anchor, want.partner["audio"]])
        assert np.array_equal(got.anchor[order_g], want.anchor[order_w])
        for m in stores:
            assert np.array_equal(got.partner[m][order_g], want.partner[m][order_w])
            assert np.array_equal(got.bad[m][order_g], want.bad[m][order_w])
            assert np.array_equal(got.weight[m][order_g], want.weight[m][order_w])
    soft = triple_rows(table, anchor, stores, "soft", 0.5)
    s0_audio = np.flatnonzero((soft.anchor == 0) & (soft.partner["audio"] == 1))
    assert len(s0_audio) == 1 and soft.bad["audio"][s0_audio[0]] == 0  # s0's good audio s0 has bad partner s1


def test_without_infos_ids_are_keys_and_bad_codes_are_refused(tmp_path):
    (tmp_path / "triplets.csv").write_text(TRIPLETS)
    table = read_triplets(tmp_path / "triplets.csv")
    assert table.column("query_key").to_pylist()[0] == "10" and table.column("target_key").to_pylist()[0] == "3"
    (tmp_path / "triplets.csv").write_text(TRIPLETS.replace(",3\n", ",5\n", 1))
    with pytest.raises(ManifestError, match="line 3: annotation '5'"):
        read_triplets(tmp_path / "triplets.csv")
    (tmp_path / "bad.csv").write_text("encord_text_id,label\n1,good\n")
    with pytest.raises(ManifestError, match="lacks E-MM1 column"):
        read_triplets(tmp_path / "bad.csv")
