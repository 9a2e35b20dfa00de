#!/usr/bin/env python3
"""Writes the seed corpus of the propagation fuzz targets (corpus/NAME/),
one file per seed, named by the SHA-1 of its content as libFuzzer does.
Lines are separated by '\\n': each line is one field of that name.
The committed corpus also holds inputs found by libFuzzer and minimised
with -merge=1 (same naming); this script only (re)writes the hand seeds.
Run from anywhere: python3 tests/fuzz/make_corpus.py"""
import hashlib
import os

TID = "12345678901234567890123456789012"
PID = "1234567890123456"
TP = f"00-{TID}-{PID}-01"

seeds = {
    "grpc_timeout": [
        "1n", "0n", "99999999n", "100000u", "250m", "30S", "2M", "1H",
        "99999999H", "00000001S", " 1S\t", "123456789n", "1x", "-1S", "1.5S",
        "", "S", "1S\n2S", "1s", "\t\t", "8", "0000000", "12345678M",
    ],
    "traceparent": [
        TP, f"00-{TID}-{PID}-00", f"00-{TID}-{PID}-ff",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        f"cc-{TID}-{PID}-01", f"cc-{TID}-{PID}-01-what-the-future-will-be-like",
        f"cc-{TID}-{PID}-01.what-the-future-will-be-like",
        f"00-{TID}-{PID}-01.", f"00-{TID}-{PID}-01-", f"ff-{TID}-{PID}-01",
        f"00-{'0' * 32}-{PID}-01", f"00-{TID}-{'0' * 16}-01",
        f"00-{TID.upper().replace('1', 'A')}-{PID}-01", f" \t{TP} \t",
        f"{TP}\n{TP}", f"0-{TID}-{PID}-01", f"000-{TID}-{PID}-01",
        f"00-{TID}3-{PID}-01", f"00-{TID}-{PID}7-01", f"00-{TID}-{PID}-1",
        f"fe-{TID}-{PID}-00-", "", "00", f"{TP},{TP}",
    ],
    "tracestate": [
        "foo=1,bar=2", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "foo=1 \t , \t bar=2, \t baz=3", "", " , ,\t", "foo=1\nfoo=1",
        "foo=1,bar=2\nrojo=1,congo=2\nbaz=3", "foo=1\n\nbar=2",
        "foo =1", "FOO=1", "foo.bar=1", "foo@=1,bar=2", "@foo=1",
        "foo@@bar=1", "foo@bar@baz=1", "foo=bar=baz", "foo=,bar=3",
        "0tenant@vendor=1", "t" * 241 + "@" + "v" * 14 + "=1",
        "z" * 256 + "=1", "z" * 257 + "=1", "foo=" + "v" * 256,
        ",".join(f"bar{i:02d}={i:02d}" for i in range(1, 33)),
        ",".join(f"bar{i:02d}={i:02d}" for i in range(1, 34)),
        "foo= 1", "foo=a b", "foo=1\tx",
        "abcdefghijklmnopqrstuvwxyz0123456789_-*/="
        + "".join(chr(c) for c in range(0x20, 0x7f) if chr(c) not in ",="),
    ],
    "baggage": [
        "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue",
        "userId=alice,serverNode=DF%2028,isProduction=false",
        "userId =   alice\nserverNode = DF%2028, isProduction = false",
        "good=1,bad key=2,\"q\"=3,x=a\\b,y=a=b,=z,noeq,p=1;bad prop,e=,ok=2",
        " , ,", "", "k=v;p;q=1;r = 2", "a=%ZZ,b=%4", "a=1,a=2",
        ",".join(f"k{i}=v{i}" for i in range(181)),
        ",".join(f"k{i:02d}=" + "v" * 123 for i in range(64)) + ",z=12",
        "k\nv", "user\nalice smith", "bad key\nv", "k\n%41%",
    ],
}

here = os.path.dirname(os.path.abspath(__file__))
for name, items in seeds.items():
    d = os.path.join(here, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for s in items:
        data = s.encode("latin-1")
        with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    print(f"{name}: {len(items)} seeds")
