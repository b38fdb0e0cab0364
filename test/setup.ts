// As in every entry point: libp2p's dependencies need Promise.withResolvers, which Node 20 lacks.
import '../node/src/polyfill.js'
