/** The address index behind the target registry (pure). */
import test from 'ava';
import { AddressIndex, addressBytes } from '../src/address-index.js';

test('address bytes: IPv4, IPv6 in its forms, and what is no address', (t) => {
  const b = new Uint8Array(16);
  t.is(addressBytes('198.18.0.255', b), 4);
  t.deepEqual([...b.subarray(0, 4)], [198, 18, 0, 255]);
  t.is(addressBytes('2001:2::1', b), 6);
  t.deepEqual([...b], [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  const full = new Uint8Array(16);
  t.is(addressBytes('2001:0002:0:0:0:0:0:0001', full), 6);
  t.deepEqual(full, b, 'the same address written out');
  t.is(addressBytes('::ffff:198.18.0.1', b), 6);
  t.deepEqual([...b.subarray(10)], [0xff, 0xff, 198, 18, 0, 1]);
  t.is(addressBytes('::', b), 6);
  for (const bad of ['', 'example.org', '198.18.0', '198.18.0.256', '1:2:3:4:5:6:7:8:9', '1::2::3', '2001:2::g', '1:2:3:4:5:6:7::8:9', 'fe80::1%eth0']) {
    t.is(addressBytes(bad, b), 0, bad);
  }
});

test('slots are found by address and port, and addresses come back canonical', (t) => {
  const index = new AddressIndex();
  t.true(index.set(0, '198.18.0.1', 0));
  t.true(index.set(1, '198.18.0.1', 80));
  t.true(index.set(2, '2001:2::8000:1', 0));
  t.false(index.set(3, 'not-an-address', 0));
  t.false(index.holds(3));
  t.is(index.size, 3);
  t.is(index.get('198.18.0.1', 0), 0);
  t.is(index.get('198.18.0.1', 80), 1);
  t.is(index.get('198.18.0.1', 81), undefined);
  t.is(index.get('2001:0002:0000::8000:0001', 0), 2, 'any spelling of the address');
  t.is(index.get('oops', 0), undefined);
  t.is(index.address(2), '2001:2::8000:1');
  t.is(index.address(1), '198.18.0.1');
  t.is(index.port(1), 80);
  index.delete(1);
  t.is(index.get('198.18.0.1', 80), undefined);
  t.is(index.get('198.18.0.1', 0), 0);
  t.is(index.size, 2);
});

test('thousands of adds and deletes agree with a Map', (t) => {
  const index = new AddressIndex();
  const reference = new Map<string, number>();
  const free: number[] = [];
  let next = 0;
  let seed = 7;
  const random = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const name = (n: number) => (n % 2 ? `198.18.${n >> 8}.${n & 0xff}` : `2001:2:0:8000::${(n + 1).toString(16)}`);
  for (let step = 0; step < 40_000; step++) {
    const n = random(6000);
    const [address, port] = [name(n), n % 5 === 0 ? 443 : 0];
    const key = `${address}|${port}`;
    const have = reference.get(key);
    t.is(index.get(address, port), have, `step ${step}: ${key}`);
    if (have === undefined) {
      const slot = free.pop() ?? next++;
      index.set(slot, address, port);
      reference.set(key, slot);
    } else if (random(3) === 0) {
      index.delete(have);
      reference.delete(key);
      free.push(have);
    }
  }
  t.is(index.size, reference.size);
  for (const [key, slot] of reference) {
    const [address, port] = key.split('|') as [string, string];
    t.is(index.get(address, Number(port)), slot);
    t.is(`${index.address(slot)}|${index.port(slot)}`, key);
  }
});
