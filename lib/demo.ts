// PLACEHOLDER demo for `npm start`; the lead replaces it.
import { nativeVersion } from './index';

console.log(`keeldb native addon ${nativeVersion()}`);
