import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App.js';
import { Controller } from './controller.js';
import './styles.css';

const controller = new Controller();
const root = document.getElementById('root');
if (root === null) throw new Error('index.html has no #root');
createRoot(root).render(
  <StrictMode>
    <App controller={controller} />
  </StrictMode>,
);
void controller.start();
