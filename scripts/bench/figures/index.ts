/**
 * Every figure, in the order they run: those that need no mesh first (on a quiet machine),
 * then those on the shared mesh. Issue 6's figures (routing quality under load, join and
 * failure times, a scaling curve) go here with the same Figure contract.
 */
import type { Figure } from '../types.js'
import { meterCatchup } from './catchup.js'
import { coldStart } from './cold.js'
import { asyncEvents } from './events.js'
import { bindingGet } from './binding.js'
import { gatewayFigure } from './gateway.js'
import { membership } from './membership.js'
import { observabilityCost } from './observability.js'
import { meshScale } from './mesh-scale.js'
import { sandboxLayers } from './layers.js'
import { meterWrites } from './meter.js'
import { routingQuality } from './routing.js'
import { meterDisk } from './disk.js'
import { replicationLag } from './replication.js'
import { sandboxRoundTrip } from './sandbox.js'
import { saturation } from './throughput.js'
import { streamFirstByte } from './stream.js'
import { warmInvoke } from './warm.js'

export const FIGURES: readonly Figure[] = [meterWrites, meterDisk, meterCatchup, sandboxRoundTrip, sandboxLayers, warmInvoke, streamFirstByte, observabilityCost, saturation, replicationLag, asyncEvents, bindingGet, coldStart, routingQuality, membership, gatewayFigure, meshScale]
