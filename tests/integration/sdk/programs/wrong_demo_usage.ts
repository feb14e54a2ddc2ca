// Wrong uses of the demo API's TypeScript SDK: `tsc --strict` must refuse each
// (test_sdks_e2e.py checks the messages), which proves the check can fail.
import { getItem } from './demo_v2_client';
import type { Item } from './demo_v2_client';

export async function priceAsText(): Promise<string> {
  const { data } = await getItem({ path: { item_id: 1 } });
  return data.price;
}

export const priceless: Item = { id: 1, name: 'moat' };
