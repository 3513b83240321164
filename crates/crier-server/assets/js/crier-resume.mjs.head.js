/*! crier-resume.mjs: served by Crier at /js/crier-resume.mjs (classic script: /js/crier-resume.js).
 *   import Pusher from 'pusher-js';
 *   import crierResume from 'https://your-crier/js/crier-resume.mjs';
 *   crierResume(Pusher);
 */
