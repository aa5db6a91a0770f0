"""EME (ECB-Mix-ECB) known answers from rfjakob/eme, an independent reference, and input checks.

Vectors are copied from rfjakob/eme at commit 60f81132ce7df625785c72ae975dc926b923e7c1:
- ``eme_test.go``: TestEnc16 and TestEnc2048 (all-zero key, tweak and input);
- ``eme32_test.go``: IEEE P1619 EME-32 vectors (pdf00020.pdf) TestEnc512 / TestDec512, and
  TestEnc512x100 / TestDec512x100 (msg00218.html), where key = vector[0:32], tweak = vector[32:48],
  input = the vector itself, transformed 100 times.
"""

from __future__ import annotations

import os
import random

import pytest
from Crypto.Cipher import AES as PyCryptodomeAES

from cryptfs.eme import EME

# --- rfjakob/eme eme_test.go -------------------------------------------------------------------
ENC16_OUT = bytes.fromhex("f1b9ce8ca15a4ba9fb476905434b9fd3")

ENC2048_OUT = bytes.fromhex(
    "630500884158a8d41216aaa6351e92ea7ca540a949e73f1d6069afef372eae226d426d8f4dbbce505051fcd596e7b32c"
    "dd1e44a40bcce0887ebbc160f779dafbb68bc25a40040987cdb5aba19b956e11dd69d7ce74d1d8788903254217300f3a"
    "fd9a92cea395a89fd842256d3919ac303c1d1a21ec44cb2898acabb3d0e04e05845e9183a64b4148f9614f62f79fa971"
    "799c896c58cd2b285cb00e40720b5c118ef1c0dbf5e51f09cd10db672b9c22c53d4bf5dabf16cfcbc382e3209e7ba279"
    "55b2afa055924d2155319205f964492e0e88172f4ffadca35cd3e694fd3d803f610edc1696113996749bdb2a2dfb8fbd"
    "92f0ef723146f93d969d1de4cc1c19efa33785f135a1203005ba2208fcd6b9f0d0e942993671b0c5baefe7ed0bbfe070"
    "a9e1d26eed37228ceda64b70c25a59fd040703acc385c6e4093a8e258984371c2d811c01723b87c820a55470501b245d"
    "97a0c7564c44e1e31a89457c1125198d27ac2dec67f7237c781f9f622e420da471af577fa6ad8014bb1dad52dc450e37"
    "ebeeb1f1b7ba3c3d5796c6646bd052fe66cf61d22f6e58efcbf0328d3b6e1088603e54bfd2da241c970fec58c7d21fc2"
    "b2f1b4b79552a92500a7e6848a22ec47ee362cef9787af3b26439470992c8d103997395aefeff10802673d4630009e4e"
    "5ed26038d5f05c589e64046274d5ff133398e4bab08ca71c0ce93dbd0657785b150c9e418339e8e47d02ae7322b5b553"
    "64dfe10dd02d54dc5f2dbe82e55bcf0503b30d709301fc7f63cd15e7e1245189405b1364b6074c0e493f7beb27385986"
    "4e95643c7d914279d95f220247618b7a5c896d604e9ce88e0a3ab434cfe97cabc520b20e2fffee958972e82e98b952cb"
    "f3567be560a8385e520b636829252cae16ac882d1d3dde447a90af52be7967f357a36382c9672a659ed0ffae9ee7b969"
    "c8c788f982fbd524efb6b852f65be5f371032691e9ef6e5a217607cf990e5351b251f841834045d9bd54633e8bb0d195"
    "69377f805857a503a2642dfc06e2063dfd465dcae83b1e362394cdf20bd6a6d5dd0bacad7f2d407e597b004e90683bfc"
    "23b92796bb0cdf67752765dbba2d1332848adcb83e60b7f3f8c397a3aa5de08bf491676a18ee4a6ed9b342b33c081794"
    "365a72668f273a655e150fa36686aa5dfbc87ccda9cbe7982e531044cd9fcea68ca1a5034ee64e0558b7c6af56808c03"
    "43506dccf39e4ca8634518e6420c107b7d5fe89943e9f40044b2ae7f047d97275ec4763b41416fb3faff897e6ee0047f"
    "97b215b02ee09a3f533cba2ee131a0aa68772860759325ea4dc7ab86528d0aff55f96d00a908ea32f9fa8bd0640d632b"
    "f0d812f43beb03e6c6d4a654b41f27143fde4aa7ed16ae4bba939fbed8ae28dace83fcb49fd3ca910512902fc6964199"
    "68e260901796f3af75d059c6e93a8f53b445f921e60d9429007c78107309a86102b923dbb2f1fa04f84539c7c58ed45b"
    "40d4b267541d8f2f932ae75dfc13ef906089e1c847635aaada201e32301f326a733f4a99caa56fa00ccd6de2752a4495"
    "408bb4c930eaf84c97a28767a036f65627efa868adeee1cf47840e67ac4489381da1513dd3d1707a5ad91ac4ba1c3571"
    "4b1cd77e05551612cdfb88187a5a39afd5b2a54f88aeb9605c1e01cd7a976a168c6e40eddcb20f09fe54a07a7c971eda"
    "08789b41e450f46a30c2b3494f30a06073631d151ae048793fe32ff08a08b8693d1da71451f7ff2438d7a521f8c97e4b"
    "c8ee744c1574d296c799d3f94e81522ce81def780660cee061d3110c1f18133dca1daabb2268aad76327f3cb6ae8c96f"
    "c66b5506f5644f2652d022d7b616209970f78b8e5c9a74f5d1fc31037d01733bff097a661d4331adc087b84e32afb9d8"
    "2a0614ea459022918f8ca60e74b7c6865d3e86e6ae4acf9546985dc5ccf242dd9ab0486bde99a1e656499cbfceef8de5"
    "beafda89965bf208c70f4a0f8f677792962b09e0a355d53bbacb4a7acc16e50aa483994d85ca7e28a34ee52843d4f27a"
    "cfb3b5347b89099fd01642b605f87f82283bb146aa319048462fe11a71d0fa064e825f69a502ae539240b13a2568383f"
    "80c30ebb9a29d2de4c45e6405bd8d1586fe5eef0477d3c21434b3471c0f864dd4c2f135278645ef1b1ebb4d6954f9276"
    "3d787ad3d0bb48409782cd803a877027ae105511cdaefe0110f9f6c65f2a34ad12532f4715c0341346dc06bcc4bb0e5c"
    "04ffdfd3f625e7e3811a760a2cfa9cbe1c2914882c192b793aeeb3ab8b03fd8be7e248fc9e5aa0c651d4bb5318c8a266"
    "b735ddc167d837499a3b38dcdfe188e25172eb974eb0eff20cc5c6e42e505fea7a3b6edfdf93b7062737ea00f72a415c"
    "4dfd3cd4fab2dad812d88d02690f606b52dcfb0ab220dc65a7dee6f31e951324a1c442adfe9cf672646876bedc2c2cb7"
    "1bac583f3cf4ea6769eb54d22bf22b0d908a297caa13767ed14c44b738799e821885b2b2988a9b88a2f35bf8d307543a"
    "f9007fadcfcc273f8029c2fe3d59449c5f193ca7f8986ca7451d9a3ee14335b10868421b64ea1605d48d4fc22e378f82"
    "b7fe3e88aada30b4c545408b87b24511e371f25d1a94e7b78a6a7aec848e6f82614f96ef5ed8705e0adec0f889c1860c"
    "f8211d716fddf319862290019a4387fb77c89a5ae7d0074fa72024f2e5096d39ebac8e8ed02191879585394987fea3a0"
    "7a720d6880910629cdcd83a02ffd98830d2f57ee6c53b5cfedb42ec7c3d925cf3080c343f21711a90f117e9eaf91402d"
    "09b83e83bd18d1c4e3d165a8b9bac7adca12cb0147bfc4c6e2166c57b8182e63fbc698881ed5b329eb491eb98050a922"
    "c15804021013bf08942db9ee6d8f2a2c4eb93771340ed9e323d09e4256b7e5ac"
)

# --- rfjakob/eme eme32_test.go (IEEE P1619 EME-32) ----------------------------------------------
# buf9F2E: TestEnc512 output for all-zero key, tweak and 512-byte input
BUF_9F2E = bytes.fromhex(
    "9f2e6c3daecae79e8839b0588ff378cd0668970b95691cb00182b9e34cd658ed3c9c276838cc5e1411fcb8cf3da1c0f3"
    "0875804c9df51157b0791100d2551334834cf4024f6b718fbc7daba07d14eb7cbc79c261b1eb036d0c9f85b914385840"
    "727284005f06a9c1627c0b7fb12a1f81fa83c4b035db006cce846d0756db9fb2448ee5628d2376ee13954213db3dca72"
    "5f2c67950eaf2cdac8a27a0433a14c96927d9145dd93e0b46e670f6c4db8add014b8880efb9a97bec5cd05bba43dcc35"
    "058045ae8168df6e67779198fcc72808ce29c7b5aefdbc9e3ee65117283bfa2e195f82ce1962dd8112cb57e8040d7767"
    "33d3bb331ea6300f91dee0cbeb2fc9afd341f5515e22371e442b86e70287546a166ec2aef89f291be62afc2a96891e44"
    "6ef6f162735574d10cff4a183de2760b5e145deaad3efde1da4b2836c665c5ec4b54cb989d277311c42db4862db2920c"
    "3942958e54f64e365e52190ed81a02d73bf78a8ae5cc83e03203ef421614b79ae984b67ee93483d5eb1ea7b4fd954cc3"
    "5059bd4d932ef34271825045d73effef2ed3489871fda2cc73924b4d459d1c6ee525421e0550d3ab876f615395ac4a54"
    "d20478a442d85c9a3c9c7fa148f2b9dcadaa83cf40e9e464da6036a55cdb873b50c1060ecc27b48dc0afc76ef73f1489"
    "281c08efce7fec47edd823f2f562b333ac209c2cd3cc577c28eedaafcedd89a6"
)

# TestEnc512x100 expected output
ENC512_X100_OUT = bytes.fromhex(
    "36008c95e732a23194937cc4dded30ffee0ff600f3ee8796a58af9bb124ad02850fb30fac78316a64693acd38602e4c7"
    "04a4152fb2d4383eeb1d85b10f9e39be8d619f689303a5b9c3f7d89baa6f2e43afaa0bd2ac3452da6aa20fff33edb8f3"
    "07247d055ecbb6e4b539c2c53088dda499b5d967f98bcec4a54f4d272643e13c4226f69ee627a04f3aaea07e033d3c4f"
    "88a6509c727588b152ca41415d697fdfdd440b2386bb9a5770ca281c2207d3eb9b27fc6a2e482e799588c77b6ba3a1a4"
    "660e77ed708a65df22863704bbe944292178362892864862d3c9a18dd70420c887e958a4306ec84fe7f66ddcdeba5bee"
    "dab032fbe8d4ddc45bd484349fd4cff5d729905fb560ac02ba1c83d8c5b71f70728f90d1d35db3651a303f9db9b53feb"
    "99194405a085f5434ed1bb4e071722376131633827c54b86153c7928e5d9e58358ef4a2efefe165e94fec5c2f06991d9"
    "f61eb4d0e6fa5a28d6ed62216e4adc2b507ae23f256188e740d425fdc86e9b226ca8f02f9d7460ee10ceb0ce7306902b"
    "b5393e4c1fcfd9226c572c1696e15ffcbbe89a9ea3e09cfa2ab463a37ba6ebedcc025979fbc0eda888db93ecaac44869"
    "a176a94e59564eafc8e9781ddbce6b74c984ec1f27f7b9c0e4aeb714b147e27934bf09a15f9013299a2d32072a7c112d"
    "064852e0c3345d8834f16f1fb280b9eaf88cadd40ca29c428666cf533fb05c1e"
)

# buf0809: TestDec512 output (decrypting 512 zero bytes with all-zero key and tweak)
BUF_0809 = bytes.fromhex(
    "080905dee8ebcc89f68bd1af635db3f5b60c2f13f7c768fceb1220f6c227fd835f293e85f1eaa8ee2322f54291bf051e"
    "7b15af84c7eaa4e85158af7f4e6ff24a62bacff6dbf91f433f3bd564dffbe9fe1b0e14d27687589498d5e8ca11acba2b"
    "c6016d7823e3036c61ce9777ec2445890779027f7d494893d92f19bdfe160ef82c36069ca887d84ea00ccc40130cf7c4"
    "118c5d0822a5e1f493cdae96f5752031b453e4cb8608c8f2ba2c78c941124c18e39f50ab74b83147aa3fb800537eb9ac"
    "55d737552e050375f607c59b4213d87e58e8da6e23029c9cb807ac63133b9fdddad8712bd7821137d9f8fdc3e28aeb08"
    "ee2fae3ec1f80d9126a3d2d0e4e4f1c6424ce6b5e973e52703afb31cee7990da82b316189ad16fe059921c60a95a1208"
    "71065b9ed649d2117dfb0ce5b53595119f2177bea462f76660c6a07c810d21e185e2dae559c27f14093f21a96d4e2a81"
    "41d76a3f964aa70bf7e929e73224bd9f1719fdff96bf4ca5db516627225760f3d2d8670a4b82e16a8b4358ecd781b0ee"
    "a22a29d0764424e91e3dc7a6a1cedd148c4bbb1b524b9c8dd3f3d15340775fe9c98eec220b524a8d9595d2f43c6783e6"
    "03a35b8df96a168975acf5ac4ea47e02b73a8ce6aff8e52dad768979bd7392b3050dd3b4e4790e25e9a34ee607db5a58"
    "5d16ca6b16aa76372ab49e31df4865073af804a5c9dab34420f260e4bd840829"
)

# TestDec512x100 expected output
DEC512_X100_OUT = bytes.fromhex(
    "78d8f9c2baaebcb97c3914fe4fd9b9ed1b0fd08c64ce0f7fa440c2b2317cacc610e75ae226a64c8de42736867dbc5fe2"
    "ac663b6db555d79dc480b707c10411b831aa3eaa5a306fdf95c4ea0684b78bd6245275b5bc245758b238274c2b7d7b8f"
    "d1b90e390cd10ed54ad7d7221a1aae56f815f7026d3ee3fb1232f85e500ae8756a53e24038e9d254b4f09486f95cab88"
    "2502b77c95795514909260314febdf2ac0d4fd47f5d6fda2ba66d1b125a900d78cab58bf8eb9f241d080061a2e46be3c"
    "21f748459426f79b619e8c8125f06a607c9a55e4fd12e817e390fb5f8c5a0576cfd25f5e0acb9dc080b9c01c7c9a4127"
    "159b8a4cd0cffae0f241bfbf8e41f24d5068bd3454a9be8e4f99881a7f6ff21e3a7a33700fc1f82b6413e3f97221a617"
    "16155449cfe87a3d5749f3919611def95d58e42bd6d89143e3a0ca588a59b79a550632fedd84629a7075b089f2b0802b"
    "69b82ee0f603f03e99263fb6951991d8804963eda1231b250df55ef79eefde3c99b9cd91eaa79563a9cd16136db2436f"
    "4d721f9123948afc0b6333cf2ed4caaba3404edd2de8f6556677c9b286a20634394cb7ea72dd7ee3657d6ee1cfed8c3b"
    "94b8bcc5784702577fe400b38a7b08957473cb57efb861f2eb9eec5a1200cbd75b41433ff1756ce72988ca9a690f6597"
    "ca0e8c98a15c8b5471bc1167978ec83bc5b5660b4bc9938a41dbcf8fce321d1f"
)

ZERO_KEY = bytes(32)
ZERO_TWEAK = bytes(16)


# --- known answers ---------------------------------------------------------------------------
def test_enc16_all_zero():
    """eme_test.go TestEnc16."""
    e = EME(ZERO_KEY)
    assert e.encrypt(ZERO_TWEAK, bytes(16)) == ENC16_OUT
    assert e.decrypt(ZERO_TWEAK, ENC16_OUT) == bytes(16)


def test_enc2048_all_zero():
    """eme_test.go TestEnc2048: the maximum of 128 blocks."""
    assert len(ENC2048_OUT) == 2048
    e = EME(ZERO_KEY)
    assert e.encrypt(ZERO_TWEAK, bytes(2048)) == ENC2048_OUT
    assert e.decrypt(ZERO_TWEAK, ENC2048_OUT) == bytes(2048)


def test_enc512_ieee_p1619():
    """eme32_test.go TestEnc512 (forward, then the reverse direction gives the input back)."""
    e = EME(ZERO_KEY)
    assert e.encrypt(ZERO_TWEAK, bytes(512)) == BUF_9F2E
    assert e.decrypt(ZERO_TWEAK, BUF_9F2E) == bytes(512)


def test_dec512_ieee_p1619():
    """eme32_test.go TestDec512: *decrypting* 512 zero bytes."""
    e = EME(ZERO_KEY)
    assert e.decrypt(ZERO_TWEAK, bytes(512)) == BUF_0809
    assert e.encrypt(ZERO_TWEAK, BUF_0809) == bytes(512)


def test_enc512_x100():
    """eme32_test.go TestEnc512x100: key and tweak taken from the TestEnc512 output."""
    e = EME(BUF_9F2E[0:32])
    tweak = BUF_9F2E[32:48]
    out = BUF_9F2E
    for _ in range(100):
        out = e.encrypt(tweak, out)
    assert out == ENC512_X100_OUT


def test_dec512_x100():
    """eme32_test.go TestDec512x100: key and tweak taken from the TestDec512 output."""
    e = EME(BUF_0809[0:32])
    tweak = BUF_0809[32:48]
    out = BUF_0809
    for _ in range(100):
        out = e.decrypt(tweak, out)
    assert out == DEC512_X100_OUT


# --- an independent, byte-oriented reference (spec §5.2, pycryptodome AES) --------------------
def _ref_mul2(b: bytes) -> bytes:
    out = bytearray(16)
    out[0] = (b[0] << 1) & 0xFF
    if b[15] >= 0x80:
        out[0] ^= 0x87
    for j in range(1, 16):
        out[j] = ((b[j] << 1) & 0xFF) | (b[j - 1] >> 7)
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _ref_eme(key: bytes, tweak: bytes, data: bytes, encrypt: bool) -> bytes:
    aes = PyCryptodomeAES.new(key, PyCryptodomeAES.MODE_ECB)
    f = aes.encrypt if encrypt else aes.decrypt
    m = len(data) // 16
    lj = []
    cur = aes.encrypt(bytes(16))
    for _ in range(m):
        cur = _ref_mul2(cur)
        lj.append(cur)
    p = [data[16 * j : 16 * j + 16] for j in range(m)]
    ppp = [f(_xor(p[j], lj[j])) for j in range(m)]
    mp = tweak
    for x in ppp:
        mp = _xor(mp, x)
    mc = f(mp)
    mm = _xor(mp, mc)
    ccc = [b""] * m
    acc = bytes(16)
    for j in range(1, m):
        mm = _ref_mul2(mm)
        ccc[j] = _xor(ppp[j], mm)
        acc = _xor(acc, ccc[j])
    ccc[0] = _xor(_xor(mc, tweak), acc)
    return b"".join(_xor(f(ccc[j]), lj[j]) for j in range(m))


def test_reference_matches_published_vectors():
    """Guard the reference itself, so the comparisons below mean something."""
    assert _ref_eme(ZERO_KEY, ZERO_TWEAK, bytes(16), True) == ENC16_OUT
    assert _ref_eme(ZERO_KEY, ZERO_TWEAK, bytes(512), True) == BUF_9F2E
    assert _ref_eme(ZERO_KEY, ZERO_TWEAK, bytes(512), False) == BUF_0809


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 33, 63, 64, 100, 127, 128])
def test_matches_reference_implementation(blocks):
    rnd = random.Random(blocks)
    key = rnd.randbytes(32)
    tweak = rnd.randbytes(16)
    data = rnd.randbytes(16 * blocks)
    e = EME(key)
    assert e.encrypt(tweak, data) == _ref_eme(key, tweak, data, True)
    assert e.decrypt(tweak, data) == _ref_eme(key, tweak, data, False)


# --- roundtrips and wide-block behaviour ----------------------------------------------------
def test_roundtrip_every_length():
    key = os.urandom(32)
    e = EME(key)
    for blocks in range(1, 129):
        tweak = os.urandom(16)
        data = os.urandom(16 * blocks)
        ct = e.encrypt(tweak, data)
        assert len(ct) == len(data)
        assert ct != data
        assert e.decrypt(tweak, ct) == data
        assert e.encrypt(tweak, e.decrypt(tweak, data)) == data


def test_deterministic_and_key_separated():
    data = bytes(range(48))
    tweak = bytes(16)
    a, b = EME(bytes(32)), EME(bytes(31) + b"\x01")
    assert a.encrypt(tweak, data) == EME(bytes(32)).encrypt(tweak, data)
    assert a.encrypt(tweak, data) != b.encrypt(tweak, data)


def test_tweak_changes_every_block():
    e = EME(bytes(32))
    data = bytes(16 * 8)
    c1 = e.encrypt(bytes(16), data)
    c2 = e.encrypt(bytes(15) + b"\x01", data)
    for j in range(8):
        assert c1[16 * j : 16 * j + 16] != c2[16 * j : 16 * j + 16]
    assert e.decrypt(bytes(15) + b"\x01", c1) != data


@pytest.mark.parametrize("changed_block", [0, 5, 9])
def test_one_changed_plaintext_block_changes_every_ciphertext_block(changed_block):
    """EME is a wide-block (tweakable, length-preserving) cipher: no block is independent."""
    e = EME(os.urandom(32))
    tweak = os.urandom(16)
    data = bytearray(os.urandom(16 * 10))
    c1 = e.encrypt(tweak, bytes(data))
    data[16 * changed_block] ^= 1
    c2 = e.encrypt(tweak, bytes(data))
    for j in range(10):
        assert c1[16 * j : 16 * j + 16] != c2[16 * j : 16 * j + 16]


def test_equal_plaintext_blocks_do_not_give_equal_ciphertext_blocks():
    e = EME(bytes(32))
    ct = e.encrypt(bytes(16), bytes(16 * 4))
    blocks = {ct[16 * j : 16 * j + 16] for j in range(4)}
    assert len(blocks) == 4


# --- rejection of bad input ------------------------------------------------------------------
@pytest.mark.parametrize("length", [0, 1, 15, 17, 31, 33, 2047, 2049, 2064, 4096])
def test_bad_data_lengths_rejected(length):
    e = EME(bytes(32))
    with pytest.raises(ValueError):
        e.encrypt(bytes(16), bytes(length))
    with pytest.raises(ValueError):
        e.decrypt(bytes(16), bytes(length))


@pytest.mark.parametrize("length", [0, 1, 8, 15, 17, 32])
def test_bad_tweak_lengths_rejected(length):
    e = EME(bytes(32))
    with pytest.raises(ValueError):
        e.encrypt(bytes(length), bytes(16))
    with pytest.raises(ValueError):
        e.decrypt(bytes(length), bytes(16))


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_non_aes256_keys_rejected(length):
    with pytest.raises(ValueError):
        EME(bytes(length))
